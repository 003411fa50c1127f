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
        #[arg(long)]
        url: String,
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
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the hash chain; reports the first broken link.
    Verify {
        file: PathBuf,
        /// The head hash seen earlier (e.g. in a log line); detects a truncated tail.
        #[arg(long)]
        expect_head: Option<String>,
    },
}
