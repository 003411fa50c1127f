use super::*;

#[test]
fn empty_config_is_all_defaults() {
    let config = InjectorConfig::from_yaml("").unwrap();
    assert_eq!(config, InjectorConfig::default());
    assert_eq!(config.broker.image, "credential-broker:0.1.0");
    assert!(config.broker.native_sidecar);
    assert_eq!(config.broker.requests.cpu, "50m");
    assert_eq!(config.broker.limits.memory, "128Mi");
    assert_eq!(config.redirect_ports, vec![80, 443, 5432]);
    assert_eq!(config.default_mode, Mode::Proxy);
}

#[test]
fn full_config_parses() {
    let config = InjectorConfig::from_yaml(
        "broker:\n  image: registry.example/cb:1.2\n  image_pull_policy: Always\n  native_sidecar: false\n  config_map: team-cb\n  resources:\n    limits: {cpu: '1', memory: 256Mi}\nmode: transparent\ntransparent:\n  redirect_ports: [443]\ncredentials:\n  strip_namespaces: [legacy]\n",
    )
    .unwrap();
    assert_eq!(config.broker.image, "registry.example/cb:1.2");
    assert!(!config.broker.native_sidecar);
    assert_eq!(config.broker.limits.cpu, "1");
    assert_eq!(config.broker.requests.cpu, "50m");
    assert_eq!(config.default_mode, Mode::Transparent);
    assert!(config.strip_namespaces.contains("legacy"));
}

#[test]
fn unknown_key_names_its_path() {
    let err = InjectorConfig::from_yaml("broker:\n  resources:\n    limits:\n      gpu: 1\n").unwrap_err().to_string();
    assert!(err.contains("broker.resources.limits"), "{err}");
    assert!(err.contains("gpu"), "{err}");
}

#[test]
fn every_invalid_value_is_listed_with_its_path() {
    let err = InjectorConfig::from_yaml(
        "broker:\n  image: ''\n  config_map: Bad_Name\n  resources:\n    requests: {cpu: lots}\nmode: sideways\ntransparent:\n  redirect_ports: [443, 15001]\ncredentials:\n  strip_namespaces: [ok, Not.OK]\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "broker.image:",
        "broker.config_map:",
        "broker.resources.requests.cpu: not a Kubernetes quantity",
        "mode: unknown mode \"sideways\"",
        "transparent.redirect_ports[1]: 15001 is one of the broker's own ports",
        "credentials.strip_namespaces[1]:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}
