//! A real moto server (`moto_server` from the test venv) with its signature and IAM checks on.
//!
//! How moto authenticates (moto 5.x, `moto/core/authorization.py` + `moto/iam/access_control.py`):
//! - Every AWS API call goes through `ActionAuthenticatorMixin._authenticate_and_authorize_action`
//!   (S3 included, with the bucket/key ARN as resource). Until `request_count` reaches
//!   `INITIAL_NO_AUTH_ACTION_COUNT` (env, default infinity = auth off) a call is let through
//!   unchecked and counted; from then on every call is checked. `/moto-api/*` is never counted.
//! - Checked means: the access key id in `Authorization` must belong to an IAM user's access key
//!   (`AKIA…`, and then no `X-Amz-Security-Token` may be present) or to a session STS issued
//!   (`ASIA…`, and the security token must match) — else `InvalidClientTokenId` / S3
//!   `InvalidAccessKeyId`. moto then recomputes the SigV4 signature with botocore from the request
//!   as received (method, path, signed headers, body) and compares — else `SignatureDoesNotMatch`.
//!   Then the caller's identity policies (user: inline + attached + group; assumed role: the role's
//!   inline + attached) must allow `<service>:<Action>` on the resource, with any Deny winning —
//!   else `AccessDenied`. `sts:GetCallerIdentity` is always allowed (but still signature-checked).
//! - `sts:AssumeRole` additionally needs the role's trust policy to allow the caller's ARN as
//!   principal (conditions such as `sts:ExternalId` are checked against the request).
//! - Not enforced: session policies (the `Policy` of AssumeRole is stored, not applied), resource
//!   policies, `aws:CurrentTime` and other global condition keys, `DurationSeconds` limits, session
//!   tags and `SourceIdentity` (accepted and ignored). So tests assert the broker's own policy
//!   output; moto proves that the signature and the role are right.
//!
//! The bootstrap below makes exactly [`BOOTSTRAP_CALLS`] unauthenticated calls; the server is
//! started with `INITIAL_NO_AUTH_ACTION_COUNT` equal to that, so every later call is checked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const USER_NAME: &str = "credential-broker";
pub const ROLE_NAME: &str = "agent-role";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/agent-role";
/// CreateUser, PutUserPolicy, CreateAccessKey, CreateRole, PutRolePolicy.
pub const BOOTSTRAP_CALLS: u32 = 5;

/// The bootstrap, as a boto3 script: the broker's IAM user (allowed to assume the role, nothing
/// else) with an access key, and the agent role (trusting that user; s3, dynamodb, sqs, sns, logs allowed).
const BOOTSTRAP: &str = include_str!("../../examples/quickstart/moto_bootstrap.py");

/// The venv's bin directory: `$CB_TEST_PYTHON`'s, else the repo's `.venv/bin` (made by `.ci/setup`).
pub fn venv_bin() -> PathBuf {
    match std::env::var_os("CB_TEST_PYTHON") {
        Some(p) => PathBuf::from(p).parent().map(PathBuf::from).unwrap_or_default(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin"),
    }
}

/// A program from the venv; panics (never skips) when it is missing.
pub fn venv_program(name: &str) -> PathBuf {
    let path = venv_bin().join(name);
    if !path.is_file() {
        panic!(
            "{} is missing: this test needs moto[server], awscli and boto3 from .ci/requirements.txt; run .ci/setup (or set CB_TEST_PYTHON to a venv that has them)",
            path.display()
        );
    }
    path
}

pub struct Moto {
    child: Option<Child>,
    port: u16,
    log: tempfile::NamedTempFile,
    /// The broker's base credentials: the IAM user `credential-broker`'s access key.
    pub base_access_key_id: String,
    pub base_secret_access_key: String,
    pub role_arn: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Moto {
    /// Starts moto on a free 127.0.0.1 port, waits until it answers, bootstraps IAM, and checks
    /// that auth is on (an unsigned-for-real call is refused).
    pub fn start() -> Moto {
        Self::start_on("127.0.0.1")
    }

    /// Like [`Moto::start`], listening on `host` (`0.0.0.0`: also reachable from a network
    /// namespace through a veth pair). The harness itself still talks to 127.0.0.1.
    pub fn start_on(host: &str) -> Moto {
        let server = venv_program("moto_server");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(server);
        cmd.args(["-H", host, "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", BOOTSTRAP_CALLS.to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        for var in
            ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
        {
            cmd.env_remove(var);
        }
        let child = cmd.spawn().expect("starting moto_server");
        let mut moto =
            Moto { child: Some(child), port, log, base_access_key_id: String::new(), base_secret_access_key: String::new(), role_arn: ROLE_ARN.into() };
        moto.wait_ready(Duration::from_secs(60));

        let out = moto
            .boto3(BOOTSTRAP, &[("MOTO_ENDPOINT", moto.endpoint().as_str()), ("USER_NAME", USER_NAME), ("ROLE_NAME", ROLE_NAME), ("ACCOUNT_ID", ACCOUNT_ID)]);
        assert!(out.status.success(), "moto bootstrap failed: {}\nmoto log:\n{}", String::from_utf8_lossy(&out.stderr), moto.log());
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bootstrap prints the access key");
        moto.base_access_key_id = key["AccessKeyId"].as_str().unwrap().into();
        moto.base_secret_access_key = key["SecretAccessKey"].as_str().unwrap().into();

        // From here on moto checks every call: one with made-up credentials must be refused.
        let probe = moto.aws(
            &["sts", "get-caller-identity"],
            &[("AWS_ENDPOINT_URL", &moto.endpoint()), ("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000"), ("AWS_SECRET_ACCESS_KEY", "x")],
        );
        assert!(
            !probe.status.success() && String::from_utf8_lossy(&probe.stderr).contains("InvalidClientTokenId"),
            "moto accepted an unknown access key after the bootstrap: auth is not on\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&probe.stdout),
            String::from_utf8_lossy(&probe.stderr)
        );
        moto
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((status, _)) = http_get(self.addr(), "/moto-api/") {
                if status == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("moto_server exited ({status}) before answering:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("moto_server did not answer /moto-api/ within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn endpoint_url(&self) -> url::Url {
        self.endpoint().parse().unwrap()
    }

    /// moto's own log (one line per request), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills the server now (also done on drop); its port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The sessions moto's STS has issued (from `/moto-api/data.json`): `session_name`,
    /// `role_arn`, `policy` (the session policy as received), `external_id`, `access_key_id`, …
    pub fn assumed_roles(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.addr(), "/moto-api/data.json").expect("moto data.json");
        assert_eq!(status, 200, "moto data.json: {}", String::from_utf8_lossy(&body));
        let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
        data["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default()
    }

    /// `aws <args>` from the venv with a clean environment (no AWS config files, no IMDS, no
    /// proxies, region us-east-1) plus `env`. Add `("AWS_ENDPOINT_URL", moto.endpoint())` to talk
    /// to moto directly.
    pub fn aws(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = clean_command(venv_program("aws"));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running aws")
    }

    /// A boto3 snippet run by the venv's Python, same clean environment as [`Moto::aws`].
    pub fn boto3(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = clean_command(venv_program("python"));
        cmd.args(["-c", script]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running python")
    }
}

/// A command with only PATH, HOME, LANG from the test's environment and AWS settings that make it
/// use nothing but what the test passes.
fn clean_command(program: PathBuf) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for var in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// A plain HTTP/1.1 GET; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = find(&raw, b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(b, b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// A TCP relay in front of a server that keeps every byte clients sent, so a test can read the
/// requests as they went over the wire (e.g. the form an SDK posted to STS).
pub struct WireTap {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Everything the server answered, all connections together (for scanning minted secrets).
    answered: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WireTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WireTap {
    pub async fn start(upstream: SocketAddr) -> WireTap {
        Self::start_with(upstream, None).await
    }

    /// The same, terminating TLS (e.g. with a [`super::pki::TestCa`] certificate for `localhost`)
    /// in front of the plain-HTTP server: an HTTPS endpoint for a client that must verify it.
    pub async fn start_tls(upstream: SocketAddr, tls: Arc<rustls::ServerConfig>) -> WireTap {
        // The relay forwards bytes to an HTTP/1.1 server: offer only http/1.1.
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_with(upstream, Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
    }

    async fn start_with(upstream: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> WireTap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let answered: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (store, answers) = (sent.clone(), answered.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (store, answers, tls) = (store.clone(), answers.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(client) = acceptor.accept(client).await {
                                relay(client, upstream, store, answers).await;
                            }
                        }
                        None => relay(client, upstream, store, answers).await,
                    }
                });
            }
        });
        WireTap { addr, sent, answered, task }
    }

    /// Every value of `<Tag>…</Tag>` in the server's answers (STS credentials, say).
    pub fn answered_values(&self, tag: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.answered.lock().unwrap()).into_owned();
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        text.split(open.as_str()).skip(1).filter_map(|rest| rest.split_once(close.as_str()).map(|(v, _)| v.to_string())).collect()
    }

    /// `http://127.0.0.1:<port>` (for a tap started with [`WireTap::start`]).
    pub fn url(&self) -> url::Url {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// `https://localhost:<port>` (for a tap started with [`WireTap::start_tls`]).
    pub fn https_url(&self) -> url::Url {
        format!("https://localhost:{}", self.addr.port()).parse().unwrap()
    }

    /// Every request received so far: (request head, body), in order per connection.
    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for conn in self.sent.lock().unwrap().iter() {
            let mut rest: &[u8] = conn;
            while let Some(end) = find(rest, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&rest[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let body_end = (end + 4 + len).min(rest.len());
                out.push((head, rest[end + 4..body_end].to_vec()));
                rest = &rest[body_end..];
            }
        }
        out
    }

    /// The form parameters of every request whose form body has `Action=<action>`.
    pub fn form_posts(&self, action: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        self.requests()
            .into_iter()
            .map(|(_, body)| url::form_urlencoded::parse(&body).into_owned().collect::<std::collections::BTreeMap<String, String>>())
            .filter(|form| form.get("Action").map(String::as_str) == Some(action))
            .collect()
    }
}

/// Copies `client` ⇄ `upstream`, appending what the client sends to a new entry of `store`.
async fn relay<S>(client: S, upstream: SocketAddr, store: Arc<Mutex<Vec<Vec<u8>>>>, answers: Arc<Mutex<Vec<u8>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
    let index = {
        let mut s = store.lock().unwrap();
        s.push(Vec::new());
        s.len() - 1
    };
    let (mut server_read, mut server_write) = server.into_split();
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = server_write.shutdown().await;
                return;
            }
            store.lock().unwrap()[index].extend_from_slice(&buf[..n]);
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = client_write.shutdown().await;
                return;
            }
            answers.lock().unwrap().extend_from_slice(&buf[..n]);
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}
