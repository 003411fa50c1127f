//! The real `credential-broker` binary, started on port 0 and killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Addresses {
    pub proxy: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    #[serde(default)]
    pub transparent: Option<SocketAddr>,
    #[serde(default)]
    pub health: Option<SocketAddr>,
    pub endpoints: std::collections::BTreeMap<String, SocketAddr>,
    #[serde(default)]
    pub databases: std::collections::BTreeMap<String, SocketAddr>,
    pub ca_cert: PathBuf,
}

pub struct Broker {
    child: Child,
    pub dir: PathBuf,
    pub addresses: Addresses,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_credential-broker"))
}

/// Runs the broker CLI to completion (check-config, explain, audit verify).
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).output().expect("running credential-broker")
}

impl Broker {
    /// Writes `config_yaml` to `dir/config.yaml` and starts the broker with it. `env` is added to the
    /// broker's environment (e.g. the dev provider's variable).
    pub fn start(dir: &Path, config_yaml: &str, env: &[(&str, &str)]) -> Broker {
        Self::start_wrapped(dir, config_yaml, env, &[])
    }

    /// Like [`Broker::start`], with the binary run through `wrapper` (e.g. `ip netns exec NS
    /// setpriv --reuid …`, each of which execs the next, so the child is still the broker).
    pub fn start_wrapped(dir: &Path, config_yaml: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Broker {
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config_yaml).unwrap();
        let addresses_file = dir.join("addresses.json");
        let _ = std::fs::remove_file(&addresses_file);
        let log_path = dir.join("broker.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary());
                cmd
            }
            None => Command::new(binary()),
        };
        cmd.arg("run").arg("--config").arg(&config_path).arg("--addresses-file").arg(&addresses_file);
        cmd.env("CREDENTIAL_BROKER_LOG", "debug,hyper=info,rustls=info,h2=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawning credential-broker");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addresses = loop {
            if let Ok(text) = std::fs::read_to_string(&addresses_file) {
                if let Ok(a) = serde_json::from_str::<Addresses>(&text) {
                    break a;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("credential-broker exited with {status} before listening; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("credential-broker did not listen within 30 s; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Broker { child, dir: dir.to_path_buf(), addresses, log_path, config_path }
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addresses.proxy.expect("proxy listener"))
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.addresses.admin.expect("admin listener"))
    }

    pub fn endpoint_url(&self, route: &str) -> String {
        format!("http://{}", self.addresses.endpoints.get(route).unwrap_or_else(|| panic!("no endpoint for route {route}")))
    }

    pub fn ca_cert(&self) -> &Path {
        &self.addresses.ca_cert
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until the log contains `needle` (reloads and alerts are asynchronous).
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }
}
