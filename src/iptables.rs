//! `credential-broker iptables-init`: the nat rules that send a pod's outbound TCP to the broker's
//! transparent listener, run once in an init container with `NET_ADMIN`.
//!
//! Everything lives in one chain, [`CHAIN`], jumped to from `nat OUTPUT`; re-running flushes and
//! refills the chain and adds the jump only once, so the command is idempotent. It drives the
//! `iptables` binary, whichever backend (legacy or nft) the image has.

use std::process::Command;

/// The chain holding the redirect rules.
pub const CHAIN: &str = "CREDENTIAL_BROKER_OUTPUT";

/// What to redirect and what to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectSpec {
    /// The transparent listener's port.
    pub proxy_port: u16,
    /// Destination ports whose traffic goes to the broker.
    pub ports: Vec<u16>,
    /// The broker's own UID: its upstream connections must not come back to itself.
    pub exclude_uid: u32,
    /// The `iptables` binary to run.
    pub binary: String,
}

/// An `iptables-init` failure, naming the command that failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("{command}: cannot run it: {source} (is iptables installed, and is this run with NET_ADMIN?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command}: exited with {status}: {stderr}")]
    Failed { command: String, status: std::process::ExitStatus, stderr: String },
    #[error("invalid arguments: {0}")]
    Invalid(String),
}

impl RedirectSpec {
    /// Check the arguments before touching any rule.
    pub fn validate(&self) -> Result<(), IptablesError> {
        if self.ports.is_empty() {
            return Err(IptablesError::Invalid("--ports names no port".into()));
        }
        if self.proxy_port == 0 || self.ports.contains(&0) {
            return Err(IptablesError::Invalid("port 0 cannot be redirected to or from".into()));
        }
        if let Some(dup) = self.ports.iter().enumerate().find_map(|(i, p)| self.ports[..i].contains(p).then_some(p)) {
            return Err(IptablesError::Invalid(format!("--ports names {dup} twice")));
        }
        if self.exclude_uid == 0 {
            // Excluding root would let any root process in the pod bypass the broker.
            return Err(IptablesError::Invalid("--exclude-uid 0 would exempt root; run the broker as its own UID".into()));
        }
        Ok(())
    }

    /// The chain's rules, in order: what returns early, then one REDIRECT per port.
    pub fn chain_rules(&self) -> Vec<Vec<String>> {
        let chain = CHAIN.to_string();
        let mut rules = vec![
            // The broker's own traffic, including its upstream connections: never redirected.
            args(&["-A", &chain, "-m", "owner", "--uid-owner", &self.exclude_uid.to_string(), "-j", "RETURN"]),
            // Loopback: the agent talking to the broker's other listeners or to itself.
            args(&["-A", &chain, "-d", "127.0.0.0/8", "-j", "RETURN"]),
        ];
        for port in &self.ports {
            rules.push(args(&["-A", &chain, "-p", "tcp", "--dport", &port.to_string(), "-j", "REDIRECT", "--to-ports", &self.proxy_port.to_string()]));
        }
        rules
    }

    /// The commands for a pod that has no rules yet, as `--dry-run` prints them.
    pub fn fresh_install(&self) -> Vec<Vec<String>> {
        let mut commands = vec![nat(&["-N", CHAIN])];
        commands.extend(self.chain_rules().into_iter().map(with_nat));
        commands.push(nat(JUMP));
        commands
    }
}

/// The jump from `nat OUTPUT` into [`CHAIN`], for TCP only.
const JUMP: &[&str] = &["-A", "OUTPUT", "-p", "tcp", "-j", CHAIN];

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `-w` waits for the xtables lock instead of failing when another process holds it.
fn with_nat(rest: Vec<String>) -> Vec<String> {
    let mut v = args(&["-w", "-t", "nat"]);
    v.extend(rest);
    v
}

fn nat(rest: &[&str]) -> Vec<String> {
    with_nat(args(rest))
}

/// `iptables a b c`, as shown in errors and by `--dry-run`.
pub fn display(binary: &str, args: &[String]) -> String {
    std::iter::once(binary).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
}

/// The `--dry-run` text: the commands, and how a re-run differs.
pub fn dry_run(spec: &RedirectSpec) -> String {
    let mut out = String::new();
    for command in spec.fresh_install() {
        out.push_str(&display(&spec.binary, &command));
        out.push('\n');
    }
    out.push_str(&format!("# when {CHAIN} exists already: -F instead of -N, and the OUTPUT jump is added only if `-C` does not find it\n"));
    out
}

/// Install (or replace) the rules. Returns the commands that were run.
pub fn apply(spec: &RedirectSpec) -> Result<Vec<String>, IptablesError> {
    spec.validate()?;
    let mut ran = Vec::new();
    let chain_exists = probe(spec, &nat(&["-S", CHAIN]), &mut ran)?;
    run(spec, &nat(&[if chain_exists { "-F" } else { "-N" }, CHAIN]), &mut ran)?;
    for rule in spec.chain_rules() {
        run(spec, &with_nat(rule), &mut ran)?;
    }
    let mut check = nat(JUMP);
    check[3] = "-C".into();
    if !probe(spec, &check, &mut ran)? {
        run(spec, &nat(JUMP), &mut ran)?;
    }
    Ok(ran)
}

fn output(spec: &RedirectSpec, args: &[String], ran: &mut Vec<String>) -> Result<std::process::Output, IptablesError> {
    let command = display(&spec.binary, args);
    ran.push(command.clone());
    Command::new(&spec.binary).args(args).output().map_err(|source| IptablesError::Spawn { command, source })
}

fn run(spec: &RedirectSpec, args: &[String], ran: &mut Vec<String>) -> Result<(), IptablesError> {
    let out = output(spec, args, ran)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(IptablesError::Failed { command: display(&spec.binary, args), status: out.status, stderr })
}

/// A command whose exit status is the answer (`-S chain`, `-C rule`): status 1 means "no"; any
/// other failure (no permission, no nat table) is an error.
fn probe(spec: &RedirectSpec, args: &[String], ran: &mut Vec<String>) -> Result<bool, IptablesError> {
    let out = output(spec, args, ran)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(IptablesError::Failed {
            command: display(&spec.binary, args),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
