//! Floods against the real broker binary, as an agent that wants to starve the others would send
//! them: 20,000 CONNECTs to distinct names under a routed wildcard (each a leaf certificate), and
//! slowloris attacks of 1,000 half-sent heads on the proxy port and on a Postgres listener. All
//! from 127.0.0.1, like every agent of a sidecar. Meanwhile a second client (curl, psql) keeps
//! working: every one of its requests succeeds and its p99 stays within 5× its quiet p99. The
//! broker's RSS stays bounded under the certificate flood, and the drops are audited, not logged
//! one line each.
//!
//! The scenarios run one at a time (a lock), so one's load does not skew another's latencies.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::broker::Broker;
use support::clients::curl_via_proxy;
use support::pki::TestCa;
use support::postgres::{psql_command, Postgres, DATABASE, SUPERUSER};
use support::upstream::HttpsUpstream;

/// The victim's host; the attacker uses `xN.flood.test`, every one of them routed.
const HOST: &str = "api.flood.test";
const PLACEHOLDER: &str = "credential-broker-placeholder";
/// Far below the attacks' 1,000 heads, so the attacks really meet the limits.
const MAX_CONNECTIONS: usize = 200;
const LEAF_CACHE: usize = 1000;
const SNI_NAMES: usize = 20_000;
/// CONNECTs the certificate flood keeps in flight at once. The broker is a debug build here and
/// every one of these costs it a leaf and a handshake: more at once only saturates the two cores
/// of CI (the second client's latency then measures the CPU, not the broker's fairness).
const SNI_CONCURRENCY: usize = 4;
const SLOWLORIS_HEADS: usize = 1000;
/// How long a slowloris goes on once all its heads are open (the second client runs meanwhile).
const SLOWLORIS_HOLD: Duration = Duration::from_secs(4);

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "reads are fine"} if input.scope.action in {"http:GET", "postgres:CONNECT", "postgres:SELECT"}
"#;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config_yaml(dir: &Path, ca: &TestCa, upstream: std::net::SocketAddr, database: Option<u16>) -> String {
    let database = database.map_or(String::new(), |port| {
        format!(
            r#"
  pg:
    type: postgres_native
    host: 127.0.0.1
    port: {port}
    database: {DATABASE}
    admin_user: {SUPERUSER}
    admin_password_file: {dir}/admin-password
    sslmode: disable
    grants: ["SELECT ON ALL TABLES IN SCHEMA public"]
    ttl_seconds: 600
databases:
  - {{name: shop, listen: "127.0.0.1:0", upstream: "127.0.0.1:{port}", database: {DATABASE}, provider: pg, sslmode: disable}}
"#,
            dir = dir.display()
        )
    });
    format!(
        r#"
mode: dev
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {upstream_ca}, leaf_cache_max_entries: {LEAF_CACHE}}}
routes:
  - name: flood
    hosts: ["*.flood.test"]
    connect_to: "{upstream}"
    provider: env
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
limits: {{max_connections: {MAX_CONNECTIONS}, max_connections_per_peer: {MAX_CONNECTIONS}}}
providers:
  env: {{type: env, variable: FLOOD_TOKEN}}{database}
"#,
        dir = dir.display(),
        upstream_ca = ca.cert_path.display(),
    )
}

struct Scenario {
    dir: tempfile::TempDir,
    upstream: HttpsUpstream,
    pg: Option<Postgres>,
    broker: Broker,
}

impl Scenario {
    async fn start(with_database: bool) -> Scenario {
        Self::start_with(with_database, |yaml| yaml).await
    }

    async fn start_with(with_database: bool, edit: impl Fn(String) -> String) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let upstream = HttpsUpstream::start(&ca, &[HOST]).await;
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let pg = with_database.then(Postgres::start);
        if let Some(pg) = &pg {
            std::fs::write(dir.path().join("admin-password"), &pg.password).unwrap();
        }
        let yaml = edit(config_yaml(dir.path(), &ca, upstream.addr, pg.as_ref().map(Postgres::port)));
        let broker = Broker::start(dir.path(), &yaml, &[("FLOOD_TOKEN", "flood-secret-token-5d1c")]);
        Scenario { dir, upstream, pg, broker }
    }

    /// One victim request: curl through the proxy (CONNECT, TLS with the broker's leaf, GET).
    fn curl_once(&self) -> (bool, Duration) {
        let started = Instant::now();
        let (status, body) = curl_via_proxy(&self.broker.proxy_url(), self.broker.ca_cert(), &[], &format!("https://{HOST}/repos/ok"));
        let ok = status == 200 && body.contains("\"ok\":true");
        (ok, started.elapsed())
    }

    /// One victim session: psql through the database listener, `SELECT 1`.
    fn psql_once(&self) -> (bool, Duration) {
        let started = Instant::now();
        let port = self.broker.addresses.databases["shop"].port().to_string();
        let out = psql_command().args(["-h", "127.0.0.1", "-p", &port, "-U", "agent", "-d", DATABASE, "-tAc", "SELECT 1"]).output().expect("psql");
        (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1", started.elapsed())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.broker.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// The victim's latencies: `rounds` calls of `once`, each of which must succeed.
fn measure(label: &str, rounds: usize, once: impl Fn() -> (bool, Duration)) -> Vec<Duration> {
    (0..rounds)
        .map(|i| {
            let (ok, took) = once();
            assert!(ok, "{label}: request {i} of the second client failed");
            took
        })
        .collect()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// The victim's quiet p99 over `rounds` calls, taken before any attack.
fn quiet_p99(label: &str, rounds: usize, once: impl Fn() -> (bool, Duration)) -> Duration {
    p99(measure(label, rounds, once))
}

/// Runs the victim for as long as `attack` (already under way) runs, at least `rounds` times,
/// then `rounds` times more once it is over. Every call must succeed, and the p99 under attack
/// must be within 5x the quiet p99: the larger of `quiet_before` and the p99 after the attack, as
/// the machine's own load (CI shares it) drifts over a minute-long flood.
async fn victim_during<T: Send + 'static>(
    label: &'static str,
    quiet_before: Duration,
    rounds: usize,
    once: impl Fn() -> (bool, Duration) + Send + 'static,
    attack: tokio::task::JoinHandle<T>,
) -> T {
    let attack_over = Arc::new(AtomicBool::new(false));
    let over = attack_over.clone();
    let victim = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(150);
        let mut samples = Vec::new();
        while (samples.len() < rounds || !over.load(Ordering::SeqCst)) && samples.len() < 5000 && Instant::now() < deadline {
            let (ok, took) = once();
            assert!(ok, "{label}: request {} of the second client failed", samples.len());
            samples.push(took);
        }
        let after = quiet_p99(label, rounds, &once);
        (samples, after)
    });
    let result = attack.await.unwrap();
    attack_over.store(true, Ordering::SeqCst);
    let (samples, quiet_after) = victim.await.unwrap();
    let n = samples.len();
    let loaded = p99(samples);
    let quiet = quiet_before.max(quiet_after);
    println!(
        "{label}: second client p99 quiet {quiet_before:?} before, {quiet_after:?} after, under attack {loaded:?} ({n} requests under attack, all succeeded)"
    );
    assert!(loaded <= quiet * 5, "{label}: p99 under attack {loaded:?} is more than 5x the quiet p99 {quiet:?}");
    result
}

/// A TLS client that checks the leaves it is handed against the broker's CA.
fn verifying_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = client_config().with_root_certificates(roots).with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS client that takes any certificate: an attacker does not care, and checking 20,000 chains
/// would only slow the flood down (one name in a hundred is still checked).
fn careless_connector() -> tokio_rustls::TlsConnector {
    let verifier = Arc::new(AcceptAnything(rustls::crypto::ring::default_provider()));
    let config = client_config().dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn client_config() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap()
}

#[derive(Debug)]
struct AcceptAnything(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// CONNECT to `host`, then a full TLS handshake (which makes the broker mint `host` a leaf), then close.
async fn connect_and_handshake(proxy: std::net::SocketAddr, connector: tokio_rustls::TlsConnector, host: String) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(proxy).await.ok()?;
        stream.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            stream.read_exact(&mut byte).await.ok()?;
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return None;
        }
        let name = rustls_pki_types::ServerName::try_from(host).ok()?;
        let mut tls = connector.connect(name, stream).await.ok()?;
        tls.shutdown().await.ok()
    };
    tokio::time::timeout(Duration::from_secs(20), attempt).await.ok().flatten().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_sni_names_keep_rss_bounded_and_another_client_served() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Scenario::start(false).await;
    let proxy = s.broker.addresses.proxy.unwrap();
    // Warm up (first leaf, upstream connection pool), then the baseline.
    measure("warm-up", 5, || s.curl_once());
    let before = s.rss_kib();

    let peak = Arc::new(AtomicUsize::new(before as usize));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), s.broker.pid());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok());
                    peak.fetch_max(rss.unwrap_or(0), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let quiet = quiet_p99("SNI flood", 50, || s.curl_once());
    let (verifying, careless) = (verifying_connector(s.broker.ca_cert()), careless_connector());
    // The attacker has a runtime (and so a thread) of its own: its TLS work must not delay the
    // test's upstream, which answers the second client.
    let flood = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let started = Instant::now();
            let handshakes = futures::stream::iter(0..SNI_NAMES)
                .map(|n| {
                    let tls = if n % 100 == 0 { verifying.clone() } else { careless.clone() };
                    connect_and_handshake(proxy, tls, format!("x{n}.flood.test"))
                })
                .buffer_unordered(SNI_CONCURRENCY)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
            (handshakes, started.elapsed())
        })
    });
    let s = Arc::new(s);
    let v = s.clone();
    let (handshakes, took) = victim_during("SNI flood", quiet, 50, move || v.curl_once(), flood).await;
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let after = s.rss_kib();
    let peak = peak.load(Ordering::SeqCst) as u64;
    println!(
        "SNI flood: {handshakes} of {SNI_NAMES} names served a leaf in {took:?}; broker RSS before {} MiB, peak {} MiB, after {} MiB (leaf cache {LEAF_CACHE})",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    assert_eq!(handshakes, SNI_NAMES, "every name under the routed wildcard gets a leaf (every hundredth checked against the CA)");
    let bound = 2 * before + 100 * 1024;
    assert!(peak < bound && after < bound, "RSS grew without bound: before {before} KiB, peak {peak} KiB, after {after} KiB");
}

/// Keeps `heads` connections to `addr` open, each with a request head (or startup packet) that
/// never completes; a connection the broker closes is reopened a second later. Until `stop`;
/// returns how many connections it opened.
async fn slowloris(addr: std::net::SocketAddr, heads: usize, partial: &'static [u8], stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let attackers = (0..heads).map(|_| {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok(mut conn) = TcpStream::connect(addr).await {
                    opened.fetch_add(1, Ordering::SeqCst);
                    if conn.write_all(partial).await.is_ok() {
                        let mut buf = [0u8; 512];
                        // Hold it until the broker closes it (or stop); one more byte a second.
                        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                            tokio::select! {
                                read = conn.read(&mut buf) => if !matches!(read, Ok(n) if n > 0) { break },
                                _ = tokio::time::sleep(Duration::from_secs(1)) => if conn.write_all(b"x").await.is_err() { break },
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });
    let attackers: Vec<_> = attackers.collect();
    for a in attackers {
        let _ = a.await;
    }
    opened.load(Ordering::SeqCst)
}

/// Starts a slowloris, waits until every one of its heads has connected at least once, and
/// leaves it running for [`SLOWLORIS_HOLD`] more; the task's result is how many connections it opened.
async fn hold_slowloris(addr: std::net::SocketAddr, partial: &'static [u8]) -> tokio::task::JoinHandle<usize> {
    let (stop, opened) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let attack = tokio::spawn(slowloris(addr, SLOWLORIS_HEADS, partial, stop.clone(), opened.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while opened.load(Ordering::SeqCst) < SLOWLORIS_HEADS {
        assert!(Instant::now() < deadline, "the slowloris did not get its connections open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::spawn(async move {
        tokio::time::sleep(SLOWLORIS_HOLD).await;
        stop.store(true, Ordering::SeqCst);
        attack.await.unwrap_or(0)
    })
}

/// The drops were audited (one by one up to the burst, then counted), and not logged line by line.
fn assert_drops_audited(s: &Scenario, listener: &str, opened: usize) {
    let records = s.audit_records();
    let evictions: Vec<_> = records.iter().filter(|r| r["details"]["code"] == "connection_evicted" && r["details"]["listener"] == listener).collect();
    assert!(!evictions.is_empty(), "no eviction audited on {listener}; {} records", records.len());
    assert!(evictions.iter().all(|r| r["event"] == "deny" && r["agent_id"] == "unidentified"), "{evictions:?}");
    let logged = s.broker.log().lines().filter(|l| l.contains("connection_evicted") || l.contains("connection_limit")).count();
    println!("{listener}: the slowloris opened {opened} connections; {} eviction records, {logged} log lines about drops", evictions.len());
    assert!(opened > SLOWLORIS_HEADS + MAX_CONNECTIONS, "the attack never had to reconnect: {opened} connections");
    assert!(logged <= 100, "{logged} log lines for {opened} dropped connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_on_the_proxy_port_does_not_lock_out_another_client() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Arc::new(Scenario::start(false).await);
    let proxy = s.broker.addresses.proxy.unwrap();
    measure("warm-up", 3, || s.curl_once());
    let quiet = quiet_p99("proxy slowloris", 30, || s.curl_once());
    let partial: &[u8] = b"GET http://api.flood.test/repos/ok HTTP/1.1\r\nHost: api.flood.test\r\nX-Slow: ";
    let attack = hold_slowloris(proxy, partial).await;
    let v = s.clone();
    let opened = victim_during("proxy slowloris", quiet, 30, move || v.curl_once(), attack).await;
    assert_drops_audited(&s, "proxy", opened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_slowloris_on_a_database_listener_does_not_lock_out_psql() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Arc::new(Scenario::start(true).await);
    assert!(s.pg.is_some());
    let listener = s.broker.addresses.databases["shop"];
    measure("warm-up", 2, || s.psql_once());
    let quiet = quiet_p99("database slowloris", 12, || s.psql_once());
    // A StartupMessage announcing 64 bytes, of which 12 arrive.
    let partial: &[u8] = &[0, 0, 0, 64, 0, 3, 0, 0, b'u', b's', b'e', b'r'];
    let attack = hold_slowloris(listener, partial).await;
    let v = s.clone();
    let opened = victim_during("database slowloris", quiet, 12, move || v.psql_once(), attack).await;
    assert_drops_audited(&s, "database:shop", opened);
}

/// Sends `bytes` on a fresh connection to `addr` and reads until the broker closes it (at most 10 s).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_refuses_before_the_broker_sees_them_are_audited() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Scenario::start_with(false, |yaml| yaml.replace("limits: {", "limits: {header_read_timeout_ms: 1000, ")).await;
    let proxy = s.broker.addresses.proxy.unwrap();
    let malformed = exchange(proxy, b"GET http://api.flood.test/ HTTP/1.1\r\nHost api.flood.test\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    let huge = format!("GET http://api.flood.test/ HTTP/1.1\r\nHost: api.flood.test\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    let too_large = exchange(proxy, huge.as_bytes()).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    let started = Instant::now();
    let silent = exchange(proxy, b"GET http://api.flood.test/ HTTP/1.1\r\n").await;
    assert!(!silent.starts_with("HTTP/1.1 2") && started.elapsed() < Duration::from_secs(9), "{silent}");

    let deadline = Instant::now() + Duration::from_secs(10);
    for code in ["malformed_request_head", "request_head_too_large", "request_head_timeout"] {
        let record = loop {
            let records = s.audit_records();
            if let Some(r) = records.into_iter().find(|r| r["details"]["code"] == code) {
                break r;
            }
            assert!(Instant::now() < deadline, "no {code} record in the audit log");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(record["event"], "deny", "{record}");
        assert_eq!(record["details"]["listener"], "proxy", "{record}");
        assert_eq!(record["details"]["peer"], "127.0.0.1", "{record}");
    }
    // Nothing reached the upstream.
    assert!(s.upstream.requests().is_empty());
}
