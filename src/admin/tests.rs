use super::*;

fn openapi() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

#[test]
fn every_route_the_router_serves_is_in_the_openapi_document_and_back() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, template, endpoint) in ROUTES {
        let op = &paths.get(*template).unwrap_or_else(|| panic!("{template} is not in docs/admin-api.yaml"))[method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in docs/admin-api.yaml");
        let concrete = template.replace("{id}", "lease-0123");
        let (matched, m, id) = match_path(&concrete).unwrap_or_else(|| panic!("router does not serve {concrete}"));
        assert_eq!((matched, m), (*endpoint, *method));
        assert_eq!(id.is_some(), template.contains("{id}"));
    }
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.iter().any(|(m, t, _)| t == path && m.eq_ignore_ascii_case(method)),
                "docs/admin-api.yaml documents {method} {path}, which the router does not serve"
            );
        }
    }
}

#[test]
fn paths_match_exactly() {
    assert_eq!(match_path("/v1/grants/revoke").map(|m| m.0), Some(Endpoint::RevokeGrants));
    assert_eq!(match_path("/v1/grants/lease-1/revoke").map(|m| (m.0, m.2)), Some((Endpoint::RevokeGrant, Some("lease-1".into()))));
    assert_eq!(match_path("/v1/secrets/db%2Fprod/rotate").and_then(|m| m.2), Some("db/prod".into()));
    assert!(match_path("/v1/grants//revoke").is_none());
    assert!(match_path("/v1/grants/").is_none());
    assert!(match_path("/v1").is_none());
}
