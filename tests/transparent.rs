//! Transparent mode end to end: a network namespace standing in for a pod, the nat rules that
//! `credential-broker iptables-init` installs in it, the broker running there as its own UID, and
//! curl with no proxy settings reaching a real HTTPS upstream only through the broker.
//!
//! Needs root (network namespaces, iptables) and `ip`, `iptables`, `setpriv`, `curl`; a missing
//! tool fails the test with what to install. `.ci/setup` installs them.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use support::broker::{binary, Broker};
use support::moto::{venv_program, Moto};
use support::pki::TestCa;
use support::postgres::{Postgres, DATABASE, SUPERUSER};
use support::upstream::HttpsUpstream;

const HOST: &str = "api.github.test";
/// A passthrough host: tunnelled, not intercepted.
const PASSTHROUGH: &str = "files.test";
const PLACEHOLDER: &str = "credential-broker-placeholder";
const TOKEN: &str = "ghs_transparent_env_token_0123456789";
/// The agreed values (sidecar-injector/src/conventions.rs).
const BROKER_UID: u32 = 15100;
const TRANSPARENT_PORT: u16 = 15006;
const HEALTH_PORT: u16 = 15021;

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "reads are fine"} if {
    input.scope.action == "http:GET"
}
"#;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} is needed for this test ({e}); {}", INSTALL))
}

const INSTALL: &str = "install it: apt-get install -y iproute2 iptables util-linux curl (or run .ci/setup); the test needs root";

fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails (never skips) when the machine cannot run this test.
fn require_tools() {
    for (tool, probe) in [("ip", "-V"), ("iptables", "--version"), ("setpriv", "--version"), ("curl", "--version")] {
        let ok = Command::new(tool).arg(probe).output().map(|o| o.status.success()).unwrap_or(false);
        assert!(ok, "`{tool}` is missing: {INSTALL}");
    }
    let uid = must("id", &["-u"]);
    assert_eq!(uid.trim(), "0", "transparent-mode tests need root for network namespaces and iptables (CI runs as root)");
}

/// A network namespace joined to the host by a veth pair: the host end is `.1`, the pod end `.2`.
/// Deleted on drop (which deletes the veth pair and every rule inside it too).
struct PodNetns {
    name: String,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
}

impl PodNetns {
    fn create() -> PodNetns {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = std::process::id() % 10_000;
        let name = format!("cb-tp-{id}-{n}");
        let (host_if, pod_if) = (format!("cbh{id}x{n}"), format!("cbp{id}x{n}"));
        // A /30 per namespace, spread by pid so parallel test binaries do not collide.
        let (b, c) = (((id / 64) % 250) as u8, (((id % 64) * 4) as u8).wrapping_add(n.wrapping_mul(4)));
        let host_ip = Ipv4Addr::new(10, 213 + (b % 40), c, 1);
        let pod_ip = Ipv4Addr::new(10, 213 + (b % 40), c, 2);
        let _ = run("ip", &["netns", "del", &name]);
        must("ip", &["netns", "add", &name]);
        let ns = PodNetns { name, host_ip, pod_ip };
        must("ip", &["link", "add", &host_if, "type", "veth", "peer", "name", &pod_if]);
        must("ip", &["link", "set", &pod_if, "netns", &ns.name]);
        must("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        must("ip", &["link", "set", &host_if, "up"]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{pod_ip}/30"), "dev", &pod_if]);
        ns.exec_ok(&["ip", "link", "set", &pod_if, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, argv: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        run("ip", &args)
    }

    fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(out.status.success(), "in {}: {}: {}{}", self.name, argv.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// curl inside the namespace with no proxy settings at all, trusting only `ca`.
    /// Returns (exit status success, HTTP status or 0, body, stderr).
    fn curl(&self, ca: &Path, args: &[&str]) -> (bool, u16, String, String) {
        let ca = ca.display().to_string();
        let mut argv = vec!["env", "-u", "HTTPS_PROXY", "-u", "https_proxy", "-u", "HTTP_PROXY", "-u", "http_proxy", "-u", "ALL_PROXY", "-u", "all_proxy"];
        argv.extend_from_slice(&["curl", "--silent", "--show-error", "--max-time", "20", "--noproxy", "*", "--cacert", &ca, "--write-out", "\n%{http_code}"]);
        argv.extend_from_slice(args);
        let out = self.exec(&argv);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (out.status.success(), code.trim().parse().unwrap_or(0), body.to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl PodNetns {
    /// `/etc/hosts` inside the namespace (`ip netns exec` bind-mounts `/etc/netns/NAME/hosts`):
    /// the agent's clients resolve these names to `ip` with no DNS server.
    fn hosts(&self, ip: Ipv4Addr, names: &[&str]) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let lines: String = std::iter::once("127.0.0.1 localhost\n".to_string()).chain(names.iter().map(|n| format!("{ip} {n}\n"))).collect();
        std::fs::write(dir.join("hosts"), lines).unwrap();
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

fn config_yaml(dir: &Path, ca: &TestCa, upstream: SocketAddr) -> String {
    format!(
        r#"
mode: dev
identity: {{agent_id: agent-7, tenant: acme}}
listeners:
  proxy: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  transparent: "127.0.0.1:{TRANSPARENT_PORT}"
  health: "0.0.0.0:{HEALTH_PORT}"
tls:
  ca_cert_path: {dir}/broker-ca.crt
  upstream_ca_file: {upstream_ca}
# files.test resolves (in the namespace) to the host end, localhost to loopback.
passthrough_hosts: [localhost, {PASSTHROUGH}]
routes:
  - name: github
    hosts: ["{HOST}"]
    connect_to: "{upstream}"
    provider: github-env
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
providers:
  github-env: {{type: env, variable: GITHUB_TOKEN}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#,
        dir = dir.display(),
        upstream_ca = ca.cert_path.display(),
    )
}

/// Everything of one scenario; dropped in field order (broker before namespace).
struct Pod {
    broker: Broker,
    upstream: HttpsUpstream,
    ns: PodNetns,
    /// The upstream's own CA (what an agent trusts for a passthrough host).
    upstream_ca: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Pod {
    async fn start() -> Pod {
        require_tools();
        let ns = PodNetns::create();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        // Port 443 on the host end: the broker's own upstream connection goes to a redirected
        // port, so only the UID exclusion keeps it from looping back to the broker.
        let upstream = HttpsUpstream::start_on(&ca, &[HOST, PASSTHROUGH], SocketAddr::from((ns.host_ip, 443))).await;
        // Before the broker starts: `ip netns exec` binds this hosts file for the broker too.
        ns.hosts(ns.host_ip, &[PASSTHROUGH]);
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let yaml = config_yaml(dir.path(), &ca, upstream.addr);
        // The broker runs as its UID and must read its config and write its CA and audit log.
        std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
        must("chown", &["-R", &format!("{BROKER_UID}:{BROKER_UID}"), &dir.path().display().to_string()]);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        // The init container's job, twice: the second run must replace, not duplicate.
        let bin = binary().display().to_string();
        let init = ["--proxy-port", "15006", "--ports", "80,443", "--exclude-uid", "15100"];
        for _ in 0..2 {
            ns.exec_ok(&[&bin, "iptables-init", init[0], init[1], init[2], init[3], init[4], init[5]]);
        }
        let rules = ns.exec_ok(&["iptables", "-t", "nat", "-S"]);
        assert_eq!(rules.matches("-A OUTPUT -p tcp -j CREDENTIAL_BROKER_OUTPUT").count(), 1, "{rules}");
        assert_eq!(rules.matches("--uid-owner 15100").count(), 1, "{rules}");

        let uid = format!("--reuid={BROKER_UID}");
        let gid = format!("--regid={BROKER_UID}");
        let wrapper = ["ip", "netns", "exec", &ns.name, "setpriv", &uid, &gid, "--clear-groups"];
        let broker = Broker::start_wrapped(dir.path(), &yaml, &[("GITHUB_TOKEN", TOKEN)], &wrapper);
        Pod { broker, upstream, ns, upstream_ca: ca.cert_path.clone(), dir }
    }

    fn resolve(&self, port: u16) -> String {
        format!("{HOST}:{port}:{}", self.ns.host_ip)
    }

    /// The first audit record matching `want` (refusals are written in the background: wait).
    fn wait_for_audit(&self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default();
            if let Some(r) = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|r| want(r)) {
                return r;
            }
            assert!(std::time::Instant::now() < deadline, "no such audit record:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_without_proxy_settings_gets_the_credential_through_the_redirect() {
    let pod = Pod::start().await;
    let ca = pod.broker.ca_cert().to_path_buf();
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");
    let resolve = pod.resolve(443);

    // curl trusts only the broker's CA: a 200 means the broker answered the TLS handshake.
    let (ok, status, body, stderr) = pod.ns.curl(&ca, &["--resolve", &resolve, "-H", &auth, &format!("https://{HOST}/repos/acme/widgets")]);
    assert!(ok && status == 200, "status {status}, body {body}, stderr {stderr}\nbroker log:\n{}", pod.broker.log());
    let seen = pod.upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/repos/acme/widgets");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()), "the upstream gets the env token");

    // HTTP/2 inside the intercepted connection works too.
    let (ok, status, _, stderr) = pod.ns.curl(&ca, &["--http2", "--resolve", &resolve, "-H", &auth, &format!("https://{HOST}/repos/acme/h2")]);
    assert!(ok && status == 200, "status {status}, stderr {stderr}");

    // The broker's own connections to :443 were not looped back: every interception is an agent's.
    let intercepts = pod.broker.log().matches("transparent TLS: intercepting").count();
    assert_eq!(intercepts, 2, "broker log:\n{}", pod.broker.log());
    assert_eq!(pod.upstream.requests().len(), 2);

    // Policy still applies: a POST is denied and never reaches the upstream.
    let (_, status, body, _) = pod.ns.curl(&ca, &["--resolve", &resolve, "-H", &auth, "-X", "POST", &format!("https://{HOST}/repos/acme/widgets")]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(pod.upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_hosts_cleartext_and_direct_connections_are_refused() {
    let pod = Pod::start().await;
    let ca = pod.broker.ca_cert().to_path_buf();

    // An unrouted server name: a TLS alert, and nothing reaches any upstream.
    let evil = format!("evil.test:443:{}", pod.ns.host_ip);
    let (ok, _, _, stderr) = pod.ns.curl(&ca, &["--resolve", &evil, "https://evil.test/"]);
    assert!(!ok, "an unrouted host must not be reachable");
    assert!(stderr.contains("alert") || stderr.contains("denied"), "curl should report the TLS alert: {stderr}");
    // Audited: who tried (the pod's address), which name on which port, and why.
    let record = pod.wait_for_audit(|r| r["details"]["code"] == "unrouted_host" && r["details"]["target"] == "evil.test:443");
    assert_eq!(record["details"]["listener"], "transparent", "{record}");
    assert_eq!(record["details"]["peer"], pod.ns.pod_ip.to_string(), "{record}");
    assert!(record["reason"].as_str().unwrap().contains("no route for host evil.test"), "{record}");

    // Cleartext HTTP to a routed host: refused as the forward proxy refuses it, credential unsent.
    let (_, status, body, _) = pod.ns.curl(&ca, &["--resolve", &pod.resolve(80), &format!("http://{HOST}/repos/acme/widgets")]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("plaintext_refused"), "{body}");
    // Cleartext to an unrouted host: 403 with the unrouted code.
    let (_, status, body, _) = pod.ns.curl(&ca, &["--resolve", &format!("other.test:80:{}", pod.ns.host_ip), "http://other.test/"]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("unrouted_host"), "{body}");
    let request_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["request_id"].as_str().unwrap().to_string();
    let record = pod.wait_for_audit(|r| r["request_id"] == request_id.as_str());
    assert_eq!(record["details"]["target"], "other.test:80", "{record}");

    // Straight to the transparent port, not redirected: refused (no open relay).
    let direct = format!("{HOST}:{TRANSPARENT_PORT}:127.0.0.1");
    let (ok, _, _, _) = pod.ns.curl(&ca, &["--resolve", &direct, &format!("https://{HOST}:{TRANSPARENT_PORT}/repos/acme/widgets")]);
    assert!(!ok);
    assert!(pod.broker.wait_for_log("addressed to the transparent listener itself", Duration::from_secs(5)), "{}", pod.broker.log());
    pod.wait_for_audit(|r| r["details"]["code"] == "not_redirected");
    assert!(pod.upstream.requests().is_empty(), "{:?}", pod.upstream.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_names_are_spliced_but_never_to_loopback() {
    let pod = Pod::start().await;
    // files.test: spliced to the address the broker resolves; the client sees the upstream's own
    // certificate and the upstream gets no credential.
    let resolve = format!("{PASSTHROUGH}:443:{}", pod.ns.host_ip);
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");
    let (ok, status, body, stderr) = pod.ns.curl(&pod.upstream_ca, &["--resolve", &resolve, "-H", &auth, &format!("https://{PASSTHROUGH}/public")]);
    assert!(ok && status == 200, "status {status}, body {body}, stderr {stderr}\n{}", pod.broker.log());
    let seen = pod.upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {PLACEHOLDER}").as_str()), "nothing injected");

    // localhost is on the list, but it resolves to loopback: a TLS alert, audited.
    let resolve = format!("localhost:443:{}", pod.ns.host_ip);
    let (ok, _, _, stderr) = pod.ns.curl(&pod.upstream_ca, &["--resolve", &resolve, "https://localhost/"]);
    assert!(!ok, "loopback must not be reachable through a passthrough name");
    assert!(stderr.contains("alert") || stderr.contains("denied"), "curl should report the TLS alert: {stderr}");
    let record = pod.wait_for_audit(|r| r["details"]["code"] == "passthrough_refused" && r["details"]["target"] == "localhost:443");
    assert!(record["reason"].as_str().unwrap().contains("a loopback address"), "{record}");
    assert_eq!(record["details"]["peer"], pod.ns.pod_ip.to_string(), "{record}");
    // Cleartext: a JSON 403 whose request id is the audit record's.
    let resolve = format!("localhost:80:{}", pod.ns.host_ip);
    let (_, status, body, _) = pod.ns.curl(&pod.upstream_ca, &["--resolve", &resolve, "http://localhost/"]);
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "passthrough_refused");
    let request_id = body["request_id"].as_str().unwrap().to_string();
    assert_eq!(pod.wait_for_audit(|r| r["request_id"] == request_id.as_str())["details"]["target"], "localhost:80");
    assert_eq!(pod.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_reach_the_health_listener_on_the_pod_ip_but_not_the_admin_api() {
    let pod = Pod::start().await;
    let base = format!("http://{}:{HEALTH_PORT}", pod.ns.pod_ip);
    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/v1/grants", 404), ("/metrics", 404)] {
        let out =
            run("curl", &["--silent", "--noproxy", "*", "--max-time", "10", "--output", "/dev/null", "--write-out", "%{http_code}", &format!("{base}{path}")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want.to_string(), "{path}");
    }
}

/// A TCP relay inside the namespace, from a loopback port there to `target` on the host: the
/// broker's upstream for moto. (Cleartext upstreams must be on loopback, and the namespace's
/// loopback is its own.)
struct Relay {
    child: Child,
    port: u16,
}

const RELAY: &str = r#"
import asyncio, sys
host, port = sys.argv[1], int(sys.argv[2])
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.write_eof()
    except Exception:
        pass
async def handle(r, w):
    ur, uw = await asyncio.open_connection(host, port)
    await asyncio.gather(pipe(r, uw), pipe(ur, w))
    uw.close()
    w.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"#;

impl Relay {
    fn start(ns: &PodNetns, target: SocketAddr) -> Relay {
        Self::start_as(ns, target, &[])
    }

    /// The relay run through `wrapper` (e.g. `setpriv` to the broker's UID, so its connections are
    /// not redirected like the broker's own).
    fn start_as(ns: &PodNetns, target: SocketAddr, wrapper: &[&str]) -> Relay {
        use std::io::BufRead;
        let python = venv_program("python").display().to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(wrapper)
            .args([&python, "-u", "-c", RELAY, &target.ip().to_string(), &target.port().to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the relay");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the relay printed no port: {line:?}"));
        Relay { child, port }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUCKET: &str = "acme-transparent";

fn aws_config_yaml(dir: &Path, relay: u16, role_arn: &str) -> String {
    format!(
        r#"
identity: {{agent_id: agent-aws, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0", transparent: "127.0.0.1:{TRANSPARENT_PORT}"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
routes:
  - name: aws
    hosts: ["*.amazonaws.com"]
    connect_to: "http://127.0.0.1:{relay}"
    allow_plaintext_upstream: true
    provider: sts
    inject: {{sigv4: {{account_id: "123456789012", placeholder_access_key_id: {PLACEHOLDER}, max_buffered_body_bytes: 1048576}}}}
providers:
  sts: {{type: sts, role_arn: "{role_arn}", region: us-east-1, endpoint_url: "http://127.0.0.1:{relay}"}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#,
        dir = dir.display(),
    )
}

/// The AWS CLI inside the namespace: placeholder keys, the broker's CA, no proxy, no endpoint URL.
fn aws_in(ns: &PodNetns, home: &Path, ca: &Path, args: &[&str]) -> Output {
    let aws = venv_program("aws").display().to_string();
    let env = [
        format!("PATH={}", std::env::var("PATH").unwrap_or_default()),
        format!("HOME={}", home.display()),
        "LANG=C.UTF-8".to_string(),
        "AWS_CONFIG_FILE=/dev/null".to_string(),
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null".to_string(),
        "AWS_DEFAULT_REGION=us-east-1".to_string(),
        "AWS_EC2_METADATA_DISABLED=true".to_string(),
        "AWS_PAGER=".to_string(),
        format!("AWS_ACCESS_KEY_ID={PLACEHOLDER}"),
        format!("AWS_SECRET_ACCESS_KEY={PLACEHOLDER}"),
        format!("AWS_CA_BUNDLE={}", ca.display()),
    ];
    let mut argv: Vec<&str> = vec!["env", "-i"];
    argv.extend(env.iter().map(String::as_str));
    argv.push(&aws);
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

#[test]
fn the_aws_cli_without_proxy_settings_reaches_moto_only_through_the_broker() {
    require_tools();
    let moto = Moto::start_on("0.0.0.0");
    let ns = PodNetns::create();
    // Real AWS host names resolve to an address where nothing listens on 443: only the redirect
    // to the broker can answer.
    let s3_hosts = ["s3.amazonaws.com", "s3.us-east-1.amazonaws.com", "acme-transparent.s3.amazonaws.com", "acme-transparent.s3.us-east-1.amazonaws.com"];
    let mut names = s3_hosts.to_vec();
    names.push("dynamodb.us-east-1.amazonaws.com");
    ns.hosts(ns.host_ip, &names);
    let relay = Relay::start(&ns, SocketAddr::from((ns.host_ip, moto.port())));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY_ALLOW_ALL).unwrap();
    let yaml = aws_config_yaml(dir.path(), relay.port, &moto.role_arn);
    std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
    std::fs::write(dir.path().join("note.txt"), "written by an agent with no proxy settings\n").unwrap();
    must("chown", &["-R", &format!("{BROKER_UID}:{BROKER_UID}"), &dir.path().display().to_string()]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = binary().display().to_string();
    ns.exec_ok(&[&bin, "iptables-init", "--proxy-port", "15006", "--ports", "80,443", "--exclude-uid", "15100"]);
    let (uid, gid) = (format!("--reuid={BROKER_UID}"), format!("--regid={BROKER_UID}"));
    let wrapper = ["ip", "netns", "exec", &ns.name, "setpriv", &uid, &gid, "--clear-groups"];
    let env = [
        ("AWS_ACCESS_KEY_ID", moto.base_access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.base_secret_access_key.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let broker = Broker::start_wrapped(dir.path(), &yaml, &env, &wrapper);
    let ca = broker.ca_cert().to_path_buf();

    let aws_ok = |args: &[&str]| {
        let out = aws_in(&ns, dir.path(), &ca, args);
        assert!(out.status.success(), "aws {args:?}: {}\nbroker log:\n{}", String::from_utf8_lossy(&out.stderr), broker.log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let note = dir.path().join("note.txt").display().to_string();
    aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    aws_ok(&["s3", "cp", &note, &format!("s3://{BUCKET}/note.txt")]);
    assert_eq!(aws_ok(&["s3", "cp", &format!("s3://{BUCKET}/note.txt"), "-"]), "written by an agent with no proxy settings\n");
    assert!(aws_ok(&["s3", "ls", &format!("s3://{BUCKET}")]).contains("note.txt"));
    assert!(aws_ok(&["dynamodb", "list-tables"]).contains("TableNames"));

    // Every call was intercepted and signed with a minted session, none with the placeholder.
    assert!(broker.log().contains("transparent TLS: intercepting"));
    let issues: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["event"] == "issue")
        .collect();
    assert!(issues.len() >= 4, "{issues:?}");
    assert!(issues.iter().all(|r| r["provider"] == "sts"));
    assert!(moto.assumed_roles().len() >= 4, "moto issued the sessions the broker signed with");
}

const POLICY_ALLOW_ALL: &str = r#"
package credential_broker
import rego.v1

decision := {"allow": true, "reason": "the transparent-mode test allows every AWS call"}
"#;

const PG_POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": true, "reason": "the transparent Postgres test allows the rest"}

decision := {"allow": false, "reason": "deleting orders needs a human"} if {
    input.scope.action == "postgres:DELETE"
}
"#;

/// `admin_port`: a relay on the namespace's loopback to the server (the admin connection is
/// plaintext, so loopback only).
fn pg_config_yaml(dir: &Path, upstream: SocketAddr, admin_port: u16) -> String {
    format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0", transparent: "127.0.0.1:{TRANSPARENT_PORT}"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
routes: []
providers:
  pg:
    type: postgres_native
    host: 127.0.0.1
    port: {admin_port}
    database: {DATABASE}
    admin_user: {SUPERUSER}
    admin_password_file: {dir}/admin-password
    sslmode: disable
    grants: ["SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"]
    ttl_seconds: 600
databases:
  - name: shop
    listen: "127.0.0.1:0"
    upstream: "{upstream}"
    database: {DATABASE}
    provider: pg
    sslmode: disable
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#,
        dir = dir.display(),
    )
}

/// `psql` inside the namespace with no password anywhere and no proxy: `-h addr -p port` is the
/// database's real address, which iptables redirects to the broker.
/// Each of `commands` is one `-c` (one `Query`), all on one connection.
fn psql_in(ns: &PodNetns, addr: SocketAddr, sslmode: &str, commands: &[&str]) -> Output {
    let psql = support::postgres::program("psql").display().to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "env", "-i"])
        .arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()))
        .args(["LANG=C.UTF-8", "PGPASSFILE=/dev/null", "PGSERVICEFILE=/dev/null", "PGCONNECT_TIMEOUT=10", "PGGSSENCMODE=disable"])
        .arg(format!("PGSSLMODE={sslmode}"))
        .args([&psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-h", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE])
        .args(commands.iter().flat_map(|c| ["-c", c]))
        .stdin(Stdio::null())
        .output()
        .expect("running psql in the namespace");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_without_a_password_reaches_the_database_through_the_redirect() {
    require_tools();
    let ns = PodNetns::create();
    let pg = Postgres::start_on(&[ns.host_ip], &[ns.pod_ip]);
    pg.admin_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp')");
    let upstream = SocketAddr::from((ns.host_ip, pg.port()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-password"), &pg.password).unwrap();
    std::fs::write(dir.path().join("policy.rego"), PG_POLICY).unwrap();
    let uid = format!("--reuid={BROKER_UID}");
    let gid = format!("--regid={BROKER_UID}");
    let setpriv = ["setpriv", &uid, &gid, "--clear-groups"];
    let admin_relay = Relay::start_as(&ns, upstream, &setpriv);
    let yaml = pg_config_yaml(dir.path(), upstream, admin_relay.port);
    std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
    must("chown", &["-R", &format!("{BROKER_UID}:{BROKER_UID}"), &dir.path().display().to_string()]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The database's port is redirected, and so is 5432, where no database is configured.
    let bin = binary().display().to_string();
    let ports = format!("80,443,5432,{}", pg.port());
    ns.exec_ok(&[&bin, "iptables-init", "--proxy-port", "15006", "--ports", &ports, "--exclude-uid", "15100"]);
    let wrapper = ["ip", "netns", "exec", &ns.name, "setpriv", &uid, &gid, "--clear-groups"];
    let broker = Broker::start_wrapped(dir.path(), &yaml, &[], &wrapper);

    // Cleartext startup, and an SSLRequest first (answered N, then the same session).
    for sslmode in ["disable", "prefer"] {
        let out = psql_in(
            &ns,
            upstream,
            sslmode,
            &["\\set VERBOSITY verbose", "SELECT item FROM orders ORDER BY id", "DELETE FROM orders", "SELECT count(*) FROM orders"],
        );
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.trim(), "book\nlamp\n2", "sslmode={sslmode}\nstdout: {stdout}\nstderr: {stderr}\nbroker log:\n{}", broker.log());
        assert!(stderr.contains("ERROR:  42501: permission denied by credential-broker: deleting orders needs a human"), "{stderr}");
    }
    assert_eq!(broker.log().matches("transparent Postgres: serving").count(), 2, "{}", broker.log());
    assert_eq!(pg.admin_sql("SELECT count(*) FROM orders"), "2");
    let server_log = pg.log();
    assert!(!server_log.contains("DELETE FROM orders"), "a denied statement reached the server:\n{server_log}");
    assert!(server_log.contains("user=cb_agent_7_"), "the upstream session was not a minted user:\n{server_log}");

    // A redirected Postgres connection to an address no database has: closed, not spliced.
    let out = psql_in(&ns, SocketAddr::from((ns.host_ip, 5432)), "disable", &["SELECT 1"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(broker.wait_for_log("no configured database has this upstream address", Duration::from_secs(5)), "{}", broker.log());
    drop(broker);
}
