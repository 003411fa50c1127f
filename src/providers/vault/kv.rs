//! One field of a KV v2 secret, read with vaultrs (`GET <mount>/data/<path>`, latest version).

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::super::{ProviderError, Secret};
use super::auth::Session;
use super::client::from_vaultrs;

/// The field's value: a string as it is, a number in JSON form; anything else is refused.
pub(super) async fn read_field(session: &Session, mount: &str, path: &str, field: &str) -> Result<Secret, ProviderError> {
    let what = format!("reading {mount}/data/{path}");
    let mut data: HashMap<String, serde_json::Value> = session
        .with_token(|client| {
            let what = what.clone();
            async move { vaultrs::kv2::read::<HashMap<String, serde_json::Value>>(&*client, mount, path).await.map_err(|e| from_vaultrs(&what, e)) }
        })
        .await?;
    let value = match data.remove(field) {
        Some(serde_json::Value::String(s)) => Zeroizing::new(s),
        Some(serde_json::Value::Number(n)) => Zeroizing::new(n.to_string()),
        Some(_) => return Err(ProviderError::permanent(format!("{what}: field {field:?} is not a string or number"))),
        None => return Err(ProviderError::permanent(format!("{what}: the secret has no field {field:?}"))),
    };
    // The other fields are secrets too.
    for (_, v) in data.drain() {
        if let serde_json::Value::String(s) = v {
            drop(Zeroizing::new(s));
        }
    }
    if value.is_empty() {
        return Err(ProviderError::permanent(format!("{what}: field {field:?} is empty")));
    }
    Ok(Secret::new(value.as_str()))
}
