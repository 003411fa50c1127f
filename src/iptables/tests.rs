use std::os::unix::fs::PermissionsExt;

use super::*;

fn spec(binary: &str) -> RedirectSpec {
    RedirectSpec { proxy_port: 15006, ports: vec![80, 443], exclude_uid: 15100, binary: binary.into() }
}

#[test]
fn dry_run_prints_the_whole_rule_set_in_order() {
    let expected = "\
iptables -w -t nat -N CREDENTIAL_BROKER_OUTPUT
iptables -w -t nat -A CREDENTIAL_BROKER_OUTPUT -m owner --uid-owner 15100 -j RETURN
iptables -w -t nat -A CREDENTIAL_BROKER_OUTPUT -d 127.0.0.0/8 -j RETURN
iptables -w -t nat -A CREDENTIAL_BROKER_OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15006
iptables -w -t nat -A CREDENTIAL_BROKER_OUTPUT -p tcp --dport 443 -j REDIRECT --to-ports 15006
iptables -w -t nat -A OUTPUT -p tcp -j CREDENTIAL_BROKER_OUTPUT
# when CREDENTIAL_BROKER_OUTPUT exists already: -F instead of -N, and the OUTPUT jump is added only if `-C` does not find it
";
    assert_eq!(dry_run(&spec("iptables")), expected);
}

#[test]
fn the_uid_exclusion_comes_before_any_redirect() {
    let rules = spec("iptables").chain_rules();
    let first_redirect = rules.iter().position(|r| r.contains(&"REDIRECT".to_string())).unwrap();
    let uid = rules.iter().position(|r| r.contains(&"--uid-owner".to_string())).unwrap();
    assert!(uid < first_redirect);
}

#[test]
fn bad_arguments_are_refused() {
    let mut s = spec("iptables");
    s.exclude_uid = 0;
    assert!(s.validate().unwrap_err().to_string().contains("root"));
    s = spec("iptables");
    s.ports = vec![0];
    assert!(s.validate().is_err());
    s.ports = vec![443, 80, 443];
    assert!(s.validate().unwrap_err().to_string().contains("443 twice"));
    s.ports = vec![];
    assert!(s.validate().is_err());
}

/// A stand-in `iptables` that logs its arguments and answers the probes from files, so the
/// create-versus-replace logic runs without root.
fn fake_iptables(dir: &std::path::Path) -> String {
    let path = dir.join("iptables");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in\n  *' -S '*) [ -e {dir}/chain ] && exit 0; exit 1;;\n  *' -N '*) touch {dir}/chain;;\n  *' -C '*) [ -e {dir}/jump ] && exit 0; exit 1;;\n  *'-A OUTPUT'*) touch {dir}/jump;;\n  *'--dport 443'*) [ -e {dir}/fail ] && {{ echo 'iptables: No chain/target/match by that name.' >&2; exit 1; }};;\nesac\nexit 0\n",
        log = dir.join("log").display(),
        dir = dir.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_rerun_flushes_the_chain_and_adds_the_jump_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&fake_iptables(dir.path()));
    let first = apply(&s).unwrap();
    assert!(first.iter().any(|c| c.ends_with("-N CREDENTIAL_BROKER_OUTPUT")));
    assert!(first.last().unwrap().ends_with("-A OUTPUT -p tcp -j CREDENTIAL_BROKER_OUTPUT"));
    let second = apply(&s).unwrap();
    assert!(second.iter().any(|c| c.ends_with("-F CREDENTIAL_BROKER_OUTPUT")));
    assert!(!second.iter().any(|c| c.contains("-N ") || c.contains("-A OUTPUT")), "{second:#?}");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(log.matches("-A OUTPUT").count(), 1);
}

#[test]
fn a_failing_command_is_named_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let err = apply(&spec(&fake_iptables(dir.path()))).unwrap_err().to_string();
    assert!(err.contains("-A CREDENTIAL_BROKER_OUTPUT -p tcp --dport 443 -j REDIRECT --to-ports 15006"), "{err}");
    assert!(err.contains("No chain/target/match"), "{err}");
    let missing = apply(&spec("/nonexistent/iptables")).unwrap_err().to_string();
    assert!(missing.contains("/nonexistent/iptables -w -t nat -S CREDENTIAL_BROKER_OUTPUT") && missing.contains("is iptables installed"), "{missing}");
}
