//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "credential-broker", version, about = "A sidecar proxy that lets AI agents call APIs without ever holding a secret")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker.
    Run {
        #[arg(long, short, env = "CREDENTIAL_BROKER_CONFIG")]
        config: PathBuf,
        /// Write the bound addresses (useful with port 0) as JSON to this file once listening.
        #[arg(long)]
        addresses_file: Option<PathBuf>,
    },
    /// Validate a configuration file; lists every problem with its key path.
    CheckConfig { file: PathBuf },
    /// Show the route, scope and policy decision for a request, without minting anything.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, required_unless_present = "sql")]
        url: Option<String>,
        /// SQL for a configured database (see --database) instead of an HTTP request: each
        /// statement's scope and decision.
        #[arg(long, conflicts_with = "url")]
        sql: Option<String>,
        /// The `databases[].name` the SQL is for; needed when the config has several.
        #[arg(long, requires = "sql")]
        database: Option<String>,
        /// A request header as 'Name: value' (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// A file holding the request body (used by classifiers that read bodies).
        #[arg(long)]
        body: Option<PathBuf>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Install the transparent-mode nat rules (run once per pod, with NET_ADMIN): outbound TCP to
    /// --ports goes to the broker's transparent listener, except the broker's own UID and loopback.
    IptablesInit {
        /// The transparent listener's port.
        #[arg(long, default_value_t = 15006)]
        proxy_port: u16,
        /// Destination ports to redirect, comma-separated. 5432 is included: the transparent
        /// listener serves Postgres connections to a configured database's upstream address.
        #[arg(long, value_delimiter = ',', default_value = "80,443,5432")]
        ports: Vec<u16>,
        /// The UID the broker runs as; its traffic is never redirected.
        #[arg(long, default_value_t = 15100)]
        exclude_uid: u32,
        /// The iptables binary (iptables, iptables-legacy, iptables-nft).
        #[arg(long, default_value = "iptables")]
        iptables: String,
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// List and revoke the grants a running broker holds (through its admin API).
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
}

/// Where the broker API is and how to authenticate to it.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The broker's admin listener.
    #[arg(long, env = "CREDENTIAL_BROKER_ADMIN_URL", default_value = "http://127.0.0.1:15000")]
    pub admin_url: String,
    /// A file holding the admin bearer token (the broker's `admin.token_file`).
    #[arg(long, env = "CREDENTIAL_BROKER_ADMIN_TOKEN_FILE")]
    pub token_file: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum GrantsCommand {
    /// Show the active grants: id, agent, tenant, provider, expiry, scope. Never a secret.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one grant by id, or every grant matching --agent/--tenant/--provider, or --all.
    Revoke {
        /// The grant id (from `grants list`).
        #[arg(conflicts_with_all = ["agent", "tenant", "provider", "all"], required_unless_present_any = ["agent", "tenant", "provider", "all"])]
        id: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// Revoke every grant (the emergency button).
        #[arg(long, conflicts_with_all = ["agent", "tenant", "provider"])]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the hash chain; reports the first broken link. Several files (a rotated set, oldest
    /// first, e.g. `audit.jsonl.* audit.jsonl`) are checked as one chain.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The head hash seen earlier (e.g. in a log line); detects a truncated tail.
        #[arg(long)]
        expect_head: Option<String>,
    },
}
