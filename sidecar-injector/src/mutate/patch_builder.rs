//! Records JSON Patch operations while applying each one to a working copy of the pod.
//!
//! Applying as we go means every later step sees the document as the API server will (indices
//! after an insertion or removal are right), and a patch that would not apply fails here, in
//! the webhook, instead of at the API server.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

use super::Denial;

/// A JSON pointer built from path segments (escaping `/` and `~` in keys such as annotations).
pub fn pointer<'a>(segments: impl IntoIterator<Item = &'a str>) -> PointerBuf {
    PointerBuf::from_tokens(segments)
}

/// A working document and the operations that produced it from the original.
#[derive(Debug, Clone)]
pub struct PatchBuilder {
    doc: Value,
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    /// Starts from the original document.
    pub fn new(doc: Value) -> Self {
        PatchBuilder { doc, ops: Vec::new() }
    }

    /// The document with every recorded operation applied.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// The value at `path` in the working document, if any.
    pub fn get(&self, path: &PointerBuf) -> Option<&Value> {
        self.doc.pointer(path.as_str())
    }

    /// The recorded operations.
    pub fn into_patch(self) -> Patch {
        Patch(self.ops)
    }

    fn apply(&mut self, op: PatchOperation) -> Result<(), Denial> {
        json_patch::patch(&mut self.doc, std::slice::from_ref(&op)).map_err(|err| Denial::Internal(format!("patch does not apply: {err}")))?;
        self.ops.push(op);
        Ok(())
    }

    /// `add`: sets an object member (replacing it) or inserts into an array (`.../-` appends).
    pub fn add(&mut self, path: PointerBuf, value: Value) -> Result<(), Denial> {
        self.apply(PatchOperation::Add(AddOperation { path, value }))
    }

    /// `replace` an existing value.
    pub fn replace(&mut self, path: PointerBuf, value: Value) -> Result<(), Denial> {
        self.apply(PatchOperation::Replace(ReplaceOperation { path, value }))
    }

    /// `remove` an existing value.
    pub fn remove(&mut self, path: PointerBuf) -> Result<(), Denial> {
        self.apply(PatchOperation::Remove(RemoveOperation { path }))
    }

    /// Makes sure `path` holds an object or array, adding `empty` when it is missing or null.
    pub fn ensure(&mut self, path: &PointerBuf, empty: Value) -> Result<(), Denial> {
        match self.get(path) {
            None | Some(Value::Null) => self.add(path.clone(), empty),
            Some(_) => Ok(()),
        }
    }

    /// Puts `item` into the array at `array`, replacing the entry whose `key` equals
    /// `item[key]`, else appending (creating the array when missing).
    pub fn upsert(&mut self, array: &PointerBuf, key: &str, item: Value) -> Result<(), Denial> {
        let position = self.get(array).and_then(Value::as_array).and_then(|items| items.iter().position(|v| v.get(key) == item.get(key)));
        match position {
            Some(index) => self.replace(child(array, &index.to_string()), item),
            None => {
                self.ensure(array, Value::Array(Vec::new()))?;
                self.add(child(array, "-"), item)
            }
        }
    }

    /// Inserts `items` at the front of the array at `array`, in order.
    pub fn prepend(&mut self, array: &PointerBuf, items: Vec<Value>) -> Result<(), Denial> {
        self.ensure(array, Value::Array(Vec::new()))?;
        for (index, item) in items.into_iter().enumerate() {
            self.add(child(array, &index.to_string()), item)?;
        }
        Ok(())
    }
}

/// `parent` extended by one segment.
pub fn child(parent: &PointerBuf, segment: &str) -> PointerBuf {
    let mut path = parent.clone();
    path.push_back(segment);
    path
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn recorded_patch_reproduces_the_working_document() {
        let original = json!({"metadata": {}, "env": [{"name": "A", "value": "1"}]});
        let mut builder = PatchBuilder::new(original.clone());
        let env = pointer(["env"]);
        builder.upsert(&env, "name", json!({"name": "A", "value": "2"})).unwrap();
        builder.upsert(&env, "name", json!({"name": "B", "value": "3"})).unwrap();
        builder.add(pointer(["metadata", "annotations"]), json!({})).unwrap();
        builder.add(pointer(["metadata", "annotations", "credential-broker/status"]), json!("injected")).unwrap();
        builder.prepend(&pointer(["list"]), vec![json!(1), json!(2)]).unwrap();
        let expected = builder.doc().clone();
        let patch = builder.into_patch();
        let serialized = serde_json::to_string(&patch).unwrap();
        assert!(serialized.contains("credential-broker~1status"), "{serialized}");
        let mut applied = original;
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(applied, expected);
        assert_eq!(applied["list"], json!([1, 2]));
    }

    #[test]
    fn an_operation_that_does_not_apply_is_an_error() {
        let mut builder = PatchBuilder::new(json!({}));
        assert!(builder.remove(pointer(["missing"])).is_err());
        assert!(builder.into_patch().0.is_empty());
    }
}
