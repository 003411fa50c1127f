//! Keeps the user's key order in injected manifests.
//!
//! The mutation works on `serde_json` values, whose maps are sorted; printing those would
//! reorder every key of the user's manifest and make GitOps diffs unreadable. So the output is
//! rebuilt in the original's order, with new keys after the existing ones (`name` first).

use serde_json::Value;
use serde_norway::{Mapping, Value as Yaml};

/// `new` as YAML, ordered like `original` where they share structure.
pub fn like(original: Option<&Yaml>, new: &Value) -> Yaml {
    match new {
        Value::Object(map) => {
            let original = original.and_then(Yaml::as_mapping);
            let mut out = Mapping::new();
            let existing = original.into_iter().flat_map(|m| m.keys()).filter_map(Yaml::as_str).filter(|key| map.contains_key(*key));
            let name_first = map.keys().filter(|k| *k == "name").map(String::as_str);
            let others = map.keys().map(String::as_str);
            for key in existing.chain(name_first).chain(others) {
                if out.contains_key(key) {
                    continue;
                }
                let original_child = original.and_then(|m| m.get(key));
                out.insert(Yaml::String(key.to_owned()), like(original_child, &map[key]));
            }
            Yaml::Mapping(out)
        }
        Value::Array(items) => {
            let original = original.and_then(Yaml::as_sequence);
            let children = items.iter().enumerate().map(|(index, item)| like(counterpart(original, index, item), item));
            Yaml::Sequence(children.collect())
        }
        scalar => serde_norway::to_value(scalar).unwrap_or(Yaml::Null),
    }
}

/// The original element an array item came from: same `name` if it has one (items can shift
/// when the injector inserts at the front), else the same position.
fn counterpart<'a>(original: Option<&'a Vec<Yaml>>, index: usize, item: &Value) -> Option<&'a Yaml> {
    let original = original?;
    match item.get("name").and_then(Value::as_str) {
        Some(name) => original.iter().find(|o| o.get("name").and_then(Yaml::as_str) == Some(name)),
        None => original.get(index),
    }
}
