//! End-to-end load harness (plain `fn main`, not criterion).
//!
//! Starts, in one run:
//! - a local HTTPS upstream (the integration tests' upstream, with its own test CA) serving
//!   `api.bench.test`;
//! - the real broker binary, with a route for `api.bench.test` whose `connect_to` points at that
//!   upstream, the `env` provider (dev mode) holding a fake token, `Authorization: Bearer {secret}`
//!   injection, an allow-all-GET Rego policy, the audit log in a temp dir and every port 0;
//!
//! then drives HTTP/1.1 keep-alive load over N concurrent connections, for a fixed time or request
//! count, through three paths and prints latency percentiles, throughput and the ratios to direct:
//! - `direct`: client → TLS → upstream;
//! - `proxy`: client → broker proxy port → `CONNECT api.bench.test:443` → TLS (broker leaf,
//!   trusted through the broker CA from `--addresses-file`) → broker → TLS → upstream;
//! - `endpoint`: client → plain HTTP → the route's endpoint listener → broker → TLS → upstream.
//!
//! Finally it prints the broker's CPU time per request and its peak RSS (VmHWM).
//!
//! Environment (all optional):
//! - `CB_BROKER_BIN`: broker binary (default: the one `cargo bench` builds with this bench, else
//!   `<target>/release/credential-broker`, built with `cargo build --release --bin
//!   credential-broker` if missing);
//! - `CB_BENCH_CONNECTIONS`: concurrent keep-alive connections per scenario (default 16);
//! - `CB_BENCH_SECS`: measured seconds per scenario (default 5);
//! - `CB_BENCH_REQUESTS`: measure this many requests per scenario instead of a duration;
//! - `CB_BENCH_WARMUP_SECS`: unmeasured warm-up per scenario (default 1);
//! - `CB_BENCH_SCENARIOS`: comma list of direct,proxy,endpoint (default all);
//! - `CB_BENCH_BROKER_LOG`: broker log level (default `info`, as deployed: one line per request);
//! - `CB_BENCH_AUDIT_DIR`: put the audit log (fsync'd before each credential use) in a temp dir
//!   under this directory instead of the system temp dir, e.g. `/dev/shm` to take the disk out.
//!
//! Run: `cargo bench --bench end_to_end`.

#[allow(dead_code)]
#[path = "../tests/support/pki.rs"]
mod pki;
#[allow(dead_code)]
#[path = "../tests/support/upstream.rs"]
mod upstream;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use pki::TestCa;
use upstream::HttpsUpstream;

const HOST: &str = "api.bench.test";
/// The AWS path: an S3 bucket host, signed with STS session credentials from a local fake STS.
const AWS_HOST: &str = "bench-data.s3.us-east-1.amazonaws.com";
const AWS_PATHS: &[&str] =
    &["/reports/q1.csv", "/reports/q2.csv", "/reports/q3.csv", "/reports/q4.csv", "/logs/a.json", "/logs/b.json", "/img/x.png", "/img/y.png"];
/// What the agent's SDK sends: a SigV4 header made with the placeholder key id.
const AWS_PLACEHOLDER_AUTH: &str = "AWS4-HMAC-SHA256 Credential=credential-broker-placeholder/20261130/us-east-1/s3/aws4_request, \
                                    SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000";
const PLACEHOLDER: &str = "credential-broker-placeholder";
const FAKE_TOKEN: &str = "fake-bench-token-5d1c9e0a7b3f";
const TOKEN_VAR: &str = "CB_BENCH_FAKE_TOKEN";
/// A handful of distinct paths, so the broker sees several scopes (each minted once, then cached).
const PATHS: &[&str] = &[
    "/repos/bench/widgets/pulls?state=open&per_page=30",
    "/repos/bench/widgets/issues",
    "/repos/bench/widgets/commits?sha=main",
    "/repos/bench/gadgets/pulls",
    "/orgs/bench/repos?type=all",
    "/user",
    "/repos/bench/widgets/contents/README.md",
    "/rate_limit",
];

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "only GET requests are allowed"}

decision := {"allow": true, "reason": "bench: every GET is allowed", "ttl_seconds": 600} if {
    input.scope.action == "http:GET"
}

decision := {"allow": true, "reason": "bench: objects of the bench bucket", "ttl_seconds": 600} if {
    input.scope.action == "s3:GetObject"
    startswith(input.scope.resource, "arn:aws:s3:::bench-data/")
}
"#;

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    connections: usize,
    measure: Measure,
    warmup: Duration,
    scenarios: Vec<Kind>,
    broker_log: String,
    audit_dir: Option<PathBuf>,
}

#[derive(Clone, Copy)]
enum Measure {
    For(Duration),
    Requests(u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Direct,
    Proxy,
    Endpoint,
    /// CONNECT to an S3 host; the broker classifies, re-signs with a cached STS session.
    Aws,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct   (TLS → upstream)",
            Kind::Proxy => "proxy    (CONNECT+TLS → broker → TLS)",
            Kind::Endpoint => "endpoint (HTTP → broker → TLS)",
            Kind::Aws => "aws      (CONNECT+TLS → broker, SigV4 → TLS)",
        }
    }
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        _ => Ok(None),
    }
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let connections = env_num::<usize>("CB_BENCH_CONNECTIONS")?.unwrap_or(16).max(1);
        let measure = match env_num::<u64>("CB_BENCH_REQUESTS")? {
            Some(n) => Measure::Requests(n.max(1)),
            None => Measure::For(Duration::from_secs_f64(env_num::<f64>("CB_BENCH_SECS")?.unwrap_or(5.0))),
        };
        let warmup = Duration::from_secs_f64(env_num::<f64>("CB_BENCH_WARMUP_SECS")?.unwrap_or(1.0));
        let scenarios = match std::env::var("CB_BENCH_SCENARIOS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|s| match s.trim() {
                    "direct" => Ok(Kind::Direct),
                    "proxy" => Ok(Kind::Proxy),
                    "endpoint" => Ok(Kind::Endpoint),
                    "aws" => Ok(Kind::Aws),
                    other => bail!("CB_BENCH_SCENARIOS: unknown scenario {other:?} (direct, proxy, endpoint, aws)"),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => vec![Kind::Direct, Kind::Proxy, Kind::Endpoint, Kind::Aws],
        };
        let broker_log = std::env::var("CB_BENCH_BROKER_LOG").unwrap_or_else(|_| "info".into());
        let audit_dir = std::env::var_os("CB_BENCH_AUDIT_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
        Ok(Settings { connections, measure, warmup, scenarios, broker_log, audit_dir })
    }
}

// ---------------------------------------------------------------------------------------------
// The broker process

/// The broker child process; killed (and reaped) on drop.
struct BrokerProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(serde::Deserialize, Debug)]
struct Addresses {
    proxy: Option<SocketAddr>,
    endpoints: std::collections::BTreeMap<String, SocketAddr>,
    ca_cert: PathBuf,
}

impl BrokerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Wait until the broker has written its addresses file (it does so once every port is bound).
    fn wait_for_addresses(&mut self, file: &Path) -> Result<Addresses> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the broker exited during start-up ({status}); log:\n{}", self.log_tail());
            }
            if let Ok(text) = std::fs::read(file) {
                if let Ok(a) = serde_json::from_slice::<Addresses>(&text) {
                    return Ok(a);
                }
            }
            if Instant::now() > deadline {
                bail!("the broker did not write {} within 30 s; log:\n{}", file.display(), self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (peak RSS, current RSS) in KiB from /proc/PID/status.
    fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field =
            |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok());
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// User + system CPU time the broker has used so far.
    fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(self.pid())
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The broker binary: `CB_BROKER_BIN`; else the one Cargo built alongside this bench (with the
/// same release-like profile, so it is never stale); else `<target>/release/credential-broker`,
/// built with `cargo build --release --bin credential-broker` if missing.
fn broker_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CB_BROKER_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("CB_BROKER_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let built_with_bench = PathBuf::from(env!("CARGO_BIN_EXE_credential-broker"));
    if built_with_bench.is_file() {
        return Ok(built_with_bench);
    }
    // This bench runs from <target>/release/deps/end_to_end-<hash>; the broker sits in <target>/release.
    let release_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .filter(|dir| dir.ends_with("release"))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release"));
    let bin = release_dir.join("credential-broker");
    if !bin.is_file() {
        eprintln!("{} is missing: running `cargo build --release --bin credential-broker` …", bin.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "credential-broker"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("running cargo build")?;
        if !status.success() || !bin.is_file() {
            bail!("`cargo build --release --bin credential-broker` failed ({status}); build it yourself or set CB_BROKER_BIN");
        }
    }
    Ok(bin)
}

fn write_broker_config(dir: &Path, upstream: SocketAddr, upstream_ca: &Path, audit: &Path, log_level: &str, sts: SocketAddr) -> Result<PathBuf> {
    let policy = dir.join("policy.rego");
    std::fs::write(&policy, POLICY)?;
    let config = format!(
        r#"
mode: dev
identity: {{agent_id: bench-agent, tenant: bench}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls:
  ca_cert_path: "{ca_out}"
  upstream_ca_file: "{upstream_ca}"
routes:
  - name: bench
    hosts: ["{HOST}"]
    connect_to: "{upstream}"
    endpoint: {{listen: "127.0.0.1:0", upstream: "https://{HOST}"}}
    provider: bench-env
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
  - name: aws
    hosts: ["*.amazonaws.com"]
    connect_to: "{upstream}"
    provider: sts
    inject: {{sigv4: {{account_id: "123456789012", placeholder_access_key_id: {PLACEHOLDER}}}}}
providers:
  bench-env: {{type: env, variable: {TOKEN_VAR}}}
  sts: {{type: sts, role_arn: "arn:aws:iam::123456789012:role/bench", region: us-east-1, endpoint_url: "http://{sts}"}}
policy: {{file: "{policy}"}}
audit: {{path: "{audit}"}}
logging: {{format: json, level: {log_level}}}
"#,
        ca_out = dir.join("broker-ca.pem").display(),
        upstream_ca = upstream_ca.display(),
        policy = policy.display(),
        audit = audit.display(),
    );
    let path = dir.join("broker.yaml");
    std::fs::write(&path, config)?;
    Ok(path)
}

fn start_broker(bin: &Path, dir: &Path, config: &Path) -> Result<(BrokerProcess, Addresses)> {
    let addresses_file = dir.join("addresses.json");
    let log = dir.join("broker.log");
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--addresses-file")
        .arg(&addresses_file)
        .env(TOKEN_VAR, FAKE_TOKEN)
        // Base credentials for the fake STS (it checks nothing).
        .env("AWS_ACCESS_KEY_ID", "AKIABENCHBASE0000000")
        .env("AWS_SECRET_ACCESS_KEY", "bench-base-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("CREDENTIAL_BROKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("broker.stderr"))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut broker = BrokerProcess { child, log };
    let addresses = broker.wait_for_addresses(&addresses_file)?;
    Ok((broker, addresses))
}

// ---------------------------------------------------------------------------------------------
// The client side

fn client_tls(ca_pem_file: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem_file).with_context(|| format!("reading {}", ca_pem_file.display()))? {
        roots.add(cert?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// How one scenario's connections are made.
#[derive(Clone)]
enum Dial {
    /// TLS straight to the upstream.
    Tls { addr: SocketAddr, tls: Arc<rustls::ClientConfig> },
    /// CONNECT through the broker's proxy port, then TLS to the broker's leaf for `host`.
    Connect { proxy: SocketAddr, tls: Arc<rustls::ClientConfig>, host: &'static str },
    /// Plain HTTP to an endpoint listener.
    Plain { addr: SocketAddr },
}

type Sender = SendRequest<Empty<Bytes>>;

async fn handshake<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) -> Result<Sender> {
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn tls_handshake(tcp: TcpStream, tls: &Arc<rustls::ClientConfig>, host: &'static str) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(host)?;
    Ok(tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?)
}

async fn dial(how: &Dial) -> Result<Sender> {
    match how {
        Dial::Tls { addr, tls } => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            handshake(tls_handshake(tcp, tls, HOST).await?).await
        }
        Dial::Connect { proxy, tls, host } => {
            let mut tcp = TcpStream::connect(proxy).await?;
            tcp.set_nodelay(true)?;
            tcp.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes()).await?;
            // Read the response head byte by byte: nothing may be consumed past it.
            let mut head = Vec::with_capacity(128);
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if tcp.read(&mut byte).await? == 0 {
                    bail!("proxy closed the connection during CONNECT: {:?}", String::from_utf8_lossy(&head));
                }
                head.push(byte[0]);
                if head.len() > 16 * 1024 {
                    bail!("CONNECT response head too long");
                }
            }
            let status_line = String::from_utf8_lossy(&head);
            if !status_line.starts_with("HTTP/1.1 200") && !status_line.starts_with("HTTP/1.0 200") {
                bail!("CONNECT refused: {}", status_line.lines().next().unwrap_or_default());
            }
            handshake(tls_handshake(tcp, tls, host).await?).await
        }
        Dial::Plain { addr } => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            handshake(tcp).await
        }
    }
}

fn request(path: &str, aws: bool) -> Request<Empty<Bytes>> {
    if aws {
        return Request::get(path)
            .header(header::HOST, AWS_HOST)
            .header(header::AUTHORIZATION, AWS_PLACEHOLDER_AUTH)
            .header("x-amz-date", "20261130T120000Z")
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .header(header::USER_AGENT, "credential-broker-bench/1")
            .body(Empty::new())
            .expect("a valid request");
    }
    Request::get(path)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Bearer {PLACEHOLDER}"))
        .header(header::USER_AGENT, "credential-broker-bench/1")
        .header(header::ACCEPT, "application/json")
        .body(Empty::new())
        .expect("a valid request")
}

/// One request on a keep-alive connection; Ok(status) once the whole body has been read.
async fn one(sender: &mut Sender, path: &str, aws: bool) -> Result<StatusCode> {
    sender.ready().await?;
    let resp = sender.send_request(request(path, aws)).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

#[derive(Default)]
struct WorkerResult {
    latencies_ns: Vec<u64>,
    connect_ns: Vec<u64>,
    errors: u64,
    bad_status: u64,
    first_problem: Option<String>,
    last_done: Option<Instant>,
}

/// Phases shared by every worker of a scenario.
struct Plan {
    measure_from: Instant,
    measure_until: Option<Instant>,
    /// Requests still to measure (in `Measure::Requests` mode); below zero means done.
    remaining: Option<AtomicI64>,
}

async fn worker(id: usize, how: Dial, plan: Arc<Plan>) -> WorkerResult {
    let mut r = WorkerResult::default();
    let mut sender: Option<Sender> = None;
    let mut i = id; // stagger the paths across workers
    loop {
        let now = Instant::now();
        if plan.measure_until.is_some_and(|until| now >= until) {
            break;
        }
        let measured = now >= plan.measure_from;
        if measured {
            if let Some(remaining) = &plan.remaining {
                if remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
            }
        }
        if sender.is_none() {
            let t0 = Instant::now();
            match dial(&how).await {
                Ok(s) => {
                    r.connect_ns.push(t0.elapsed().as_nanos() as u64);
                    sender = Some(s);
                }
                Err(e) => {
                    r.errors += 1;
                    r.first_problem.get_or_insert_with(|| format!("connect: {e:#}"));
                    if r.errors > 100 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let aws = how.is_aws();
        let paths = if aws { AWS_PATHS } else { PATHS };
        let path = paths[i % paths.len()];
        i += 1;
        let t0 = Instant::now();
        let result = one(s, path, aws).await;
        let done = Instant::now();
        match result {
            Ok(status) if status == StatusCode::OK => {
                if measured {
                    r.latencies_ns.push(done.duration_since(t0).as_nanos() as u64);
                    r.last_done = Some(done);
                }
            }
            Ok(status) => {
                r.bad_status += 1;
                r.first_problem.get_or_insert_with(|| format!("{path}: HTTP {status}"));
                if r.bad_status > 100 {
                    break;
                }
            }
            Err(e) => {
                r.errors += 1;
                r.first_problem.get_or_insert_with(|| format!("{path}: {e:#}"));
                sender = None; // reconnect
                if r.errors > 100 {
                    break;
                }
            }
        }
    }
    r
}

struct Stats {
    kind: Kind,
    requests: u64,
    errors: u64,
    bad_status: u64,
    seconds: f64,
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    connect_p50: f64,
    broker_cpu: Option<Duration>,
    first_problem: Option<String>,
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn run_scenario(kind: Kind, how: Dial, settings: &Settings, broker: Option<&BrokerProcess>) -> Stats {
    let start = Instant::now();
    let measure_from = start + settings.warmup;
    let plan = Arc::new(Plan {
        measure_from,
        measure_until: match settings.measure {
            Measure::For(d) => Some(measure_from + d),
            Measure::Requests(_) => None,
        },
        remaining: match settings.measure {
            Measure::Requests(n) => Some(AtomicI64::new(n as i64)),
            Measure::For(_) => None,
        },
    });
    // Broker CPU is sampled around the measured window (at the warm-up boundary and the end).
    let pid = broker.map(BrokerProcess::pid);
    let cpu_at_measure_start = {
        let plan = plan.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(plan.measure_from.into()).await;
            pid.and_then(cpu_time_of)
        })
    };
    let workers: Vec<_> = (0..settings.connections).map(|id| tokio::spawn(worker(id, how.clone(), plan.clone()))).collect();
    let mut all = WorkerResult::default();
    for w in workers {
        let r = w.await.expect("a worker panicked");
        all.latencies_ns.extend(r.latencies_ns);
        all.connect_ns.extend(r.connect_ns);
        all.errors += r.errors;
        all.bad_status += r.bad_status;
        if all.first_problem.is_none() {
            all.first_problem = r.first_problem;
        }
        all.last_done = all.last_done.max(r.last_done);
    }
    let cpu_end = pid.and_then(cpu_time_of);
    let cpu_start = cpu_at_measure_start.await.ok().flatten();
    let broker_cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    all.latencies_ns.sort_unstable();
    all.connect_ns.sort_unstable();
    let seconds = all.last_done.map_or(0.0, |t| t.duration_since(measure_from).as_secs_f64());
    let requests = all.latencies_ns.len() as u64;
    Stats {
        kind,
        requests,
        errors: all.errors,
        bad_status: all.bad_status,
        seconds,
        rps: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
        p50: percentile_us(&all.latencies_ns, 50.0),
        p90: percentile_us(&all.latencies_ns, 90.0),
        p99: percentile_us(&all.latencies_ns, 99.0),
        max: all.latencies_ns.last().map_or(f64::NAN, |&n| n as f64 / 1000.0),
        connect_p50: percentile_us(&all.connect_ns, 50.0),
        broker_cpu,
        first_problem: all.first_problem,
    }
}

/// User + system CPU time of a process, from /proc/PID/stat.
fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (`state`);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()))
}

fn print_table(stats: &[Stats], settings: &Settings) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<40} {:>9} {:>6} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "scenario", "requests", "errors", "secs", "req/s", "p50 µs", "p90 µs", "p99 µs", "max µs", "connect µs", "broker CPU/req"
    );
    let _ = writeln!(out, "{}", "-".repeat(135));
    for s in stats {
        let cpu = match s.broker_cpu {
            Some(cpu) if s.requests > 0 => format!("{:.0} µs", cpu.as_secs_f64() * 1e6 / s.requests as f64),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<40} {:>9} {:>6} {:>6.2} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>12}",
            s.kind.label(),
            s.requests,
            s.errors + s.bad_status,
            s.seconds,
            s.rps,
            s.p50,
            s.p90,
            s.p99,
            s.max,
            s.connect_p50,
            cpu
        );
    }
    if let Some(direct) = stats.iter().find(|s| s.kind == Kind::Direct) {
        let _ = writeln!(out, "\nratios to direct (latency: higher is slower; throughput: lower is slower)");
        for s in stats.iter().filter(|s| s.kind != Kind::Direct) {
            let _ = writeln!(
                out,
                "  {:<9} p50 ×{:.2}   p99 ×{:.2}   throughput ×{:.2}   (+{:.0} µs at p50)",
                format!("{:?}", s.kind).to_lowercase(),
                s.p50 / direct.p50,
                s.p99 / direct.p99,
                s.rps / direct.rps,
                s.p50 - direct.p50
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{} keep-alive HTTP/1.1 connections per scenario, {}, {:.1} s warm-up; client, upstream and broker share {} CPU(s).",
        settings.connections,
        match settings.measure {
            Measure::For(d) => format!("{:.1} s measured", d.as_secs_f64()),
            Measure::Requests(n) => format!("{n} requests measured"),
        },
        settings.warmup.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    print!("{out}");
    for s in stats {
        if let Some(p) = &s.first_problem {
            println!("  {:?}: {} error(s) / {} bad status; first: {p}", s.kind, s.errors, s.bad_status);
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`, as CI runs) this is a
    // smoke run: every scenario end to end, a few requests each, so the harness itself is tested.
    let mut settings = Settings::from_env()?;
    if !std::env::args().any(|a| a == "--bench") {
        settings.connections = 2;
        settings.measure = Measure::Requests(40);
        settings.warmup = Duration::ZERO;
    }
    let bin = broker_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(settings, bin))
}

/// The 1-minute load average, to flag runs disturbed by other work on the machine.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

async fn run(settings: Settings, bin: PathBuf) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(load) = load_average().filter(|&l| l > cpus as f64 * 0.5) {
        println!("warning: 1-minute load average is {load:.2} on {cpus} CPU(s) before the run; other work will skew the numbers");
    }
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path());
    let upstream = HttpsUpstream::start(&ca, &[HOST, AWS_HOST]).await;
    let sts = start_fake_sts().await?;
    let audit_dir = match &settings.audit_dir {
        Some(parent) => Some(tempfile::tempdir_in(parent).with_context(|| format!("CB_BENCH_AUDIT_DIR={}", parent.display()))?),
        None => None,
    };
    let audit = audit_dir.as_ref().map_or(dir.path(), |d| d.path()).join("audit.jsonl");
    let config = write_broker_config(dir.path(), upstream.addr, &ca.cert_path, &audit, &settings.broker_log, sts)?;
    let (broker, addresses) = start_broker(&bin, dir.path(), &config)?;
    println!(
        "upstream https://{HOST} at {}; broker {} (pid {}) proxy {:?}, endpoint {:?}",
        upstream.addr,
        bin.display(),
        broker.pid(),
        addresses.proxy,
        addresses.endpoints.get("bench")
    );
    if let Some((hwm, _)) = broker.memory_kib() {
        println!("broker RSS after start-up: {:.1} MiB", hwm as f64 / 1024.0);
    }

    let upstream_tls = client_tls(&ca.cert_path)?;
    let broker_tls = client_tls(&addresses.ca_cert)?;

    let mut stats = Vec::new();
    for &kind in &settings.scenarios {
        let how = match kind {
            Kind::Direct => Dial::Tls { addr: upstream.addr, tls: upstream_tls.clone() },
            Kind::Proxy => Dial::Connect { proxy: addresses.proxy.context("the broker has no proxy listener")?, tls: broker_tls.clone(), host: HOST },
            Kind::Aws => Dial::Connect { proxy: addresses.proxy.context("the broker has no proxy listener")?, tls: broker_tls.clone(), host: AWS_HOST },
            Kind::Endpoint => Dial::Plain { addr: *addresses.endpoints.get("bench").context("the broker has no endpoint listener for route bench")? },
        };
        // Sanity: one request must succeed, and through the broker the upstream must have received
        // the injected credential, not the placeholder.
        upstream.received.lock().unwrap().clear();
        let mut probe = dial(&how).await.with_context(|| format!("{kind:?}: first connection"))?;
        let first_path = if kind == Kind::Aws { AWS_PATHS[0] } else { PATHS[0] };
        let status = one(&mut probe, first_path, kind == Kind::Aws).await.with_context(|| format!("{kind:?}: first request"))?;
        if status != StatusCode::OK {
            bail!("{kind:?}: first request answered HTTP {status}; broker log:\n{}", broker.log_tail());
        }
        drop(probe);
        let seen = upstream.requests().last().and_then(|r| r.authorization.clone()).unwrap_or_default();
        let expected = match kind {
            Kind::Direct => format!("Bearer {PLACEHOLDER}"),
            Kind::Aws => format!("AWS4-HMAC-SHA256 Credential={FAKE_STS_KEY_ID}/"),
            _ => format!("Bearer {FAKE_TOKEN}"),
        };
        let matches = if kind == Kind::Aws { seen.starts_with(&expected) } else { seen == expected };
        if !matches {
            bail!("{kind:?}: upstream saw Authorization {seen:?}, expected {expected:?}");
        }
        upstream.received.lock().unwrap().clear();

        eprintln!("running {:?} …", kind);
        let s = run_scenario(kind, how, &settings, (kind != Kind::Direct).then_some(&broker)).await;
        upstream.received.lock().unwrap().clear(); // the upstream records every request; keep memory flat
        stats.push(s);
    }

    print_table(&stats, &settings);
    match broker.memory_kib() {
        Some((hwm, rss)) => println!("\nbroker peak RSS (VmHWM): {:.1} MiB   current RSS: {:.1} MiB", hwm as f64 / 1024.0, rss as f64 / 1024.0),
        None => println!("\nbroker peak RSS: unavailable (no /proc/{}/status)", broker.pid()),
    }
    if let Some(cpu) = broker.cpu_time() {
        println!("broker total CPU time: {:.2} s", cpu.as_secs_f64());
    }
    let audit_lines = std::fs::read_to_string(&audit).map(|t| t.lines().count()).unwrap_or(0);
    let brokered: u64 = stats.iter().filter(|s| s.kind != Kind::Direct).map(|s| s.requests).sum();
    println!("audit records written to {}: {audit_lines} (the broker's scenarios measured {brokered} requests, plus warm-up)", audit.display());
    let failed = stats.iter().any(|s| s.requests == 0);
    drop(broker);
    if failed {
        bail!("a scenario completed no requests");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A fake STS for the AWS scenario: answers every AssumeRole with the same long-lived session, so
// the scenario measures the broker's warm path (classify, policy, cached session, SigV4, forward).

const FAKE_STS_KEY_ID: &str = "ASIABENCHSESSION0001";

async fn start_fake_sts() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let xml = format!(
                        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials>\
                         <AccessKeyId>{FAKE_STS_KEY_ID}</AccessKeyId><SecretAccessKey>bench-session-secret</SecretAccessKey>\
                         <SessionToken>bench-session-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                         <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/bench/s</Arn><AssumedRoleId>AROABENCH:s</AssumedRoleId>\
                         </AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata></AssumeRoleResponse>"
                    );
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder().header("content-type", "text/xml").body(http_body_util::Full::new(Bytes::from(xml))).unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

impl Dial {
    fn is_aws(&self) -> bool {
        matches!(self, Dial::Connect { host, .. } if *host == AWS_HOST)
    }
}
