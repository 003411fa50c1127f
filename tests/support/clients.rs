//! Real clients: curl and Python `requests`, and what tests do with client processes. A missing
//! tool fails the test with what to install.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl").args(["--silent", "--show-error", "--max-time", "30"]).args(args).output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("curl is needed for this test ({e}); install it: apt-get install -y curl (or run .ci/run)"),
    }
}

/// A curl call through the broker's forward proxy, trusting the broker's CA only.
/// Returns (HTTP status, body).
pub fn curl_via_proxy(proxy: &str, ca: &std::path::Path, extra: &[&str], url: &str) -> (u16, String) {
    let mut args = vec!["--proxy", proxy, "--cacert", ca.to_str().unwrap(), "--write-out", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    // No proxy variables from the environment may sneak in.
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30", "--noproxy", ""])
        .args(&args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap_or_else(|e| panic!("curl is needed for this test ({e}); install it: apt-get install -y curl (or run .ci/run)"));
    split_status(&out)
}

pub fn split_status(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code = code.trim().parse().unwrap_or_else(|_| panic!("curl gave no status: stdout={text:?} stderr={}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}

/// The Python interpreter that has `requests`: `$CB_TEST_PYTHON`, else the repo's `.venv` that `.ci/run` makes.
pub fn python() -> PathBuf {
    let candidate = std::env::var_os("CB_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&candidate).args(["-c", "import requests"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        panic!(
            "Python with `requests` is needed for this test and {} has none; run .ci/run once, or: \
             python3 -m venv .venv && .venv/bin/pip install -r .ci/requirements.txt (or set CB_TEST_PYTHON)",
            candidate.display()
        );
    }
    candidate
}

/// Runs a Python snippet with the given environment; returns its output.
pub fn run_python(code: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(python());
    cmd.args(["-c", code]);
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running python")
}

/// A finished client's (stdout, stderr) as text.
pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waits (at most `within`) for a client started in the background to exit; its output. Past
/// `within` it is killed and the test fails with what it printed.
pub fn wait_output(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {within:?}: {:?}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
