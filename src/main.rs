//! Thin entry point: parse, validate, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use credential_broker::cli::{AuditCommand, Cli, Command};
use credential_broker::config::Config;
use credential_broker::explain::{explain, ExplainRequest};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, addresses_file } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            credential_broker::telemetry::init(config.logging.json, &config.logging.level);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(credential_broker::app::run(config, addresses_file.as_deref())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "credential-broker stopped");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!("{}: ok ({} route(s), {} provider(s))", file.display(), c.routes.len(), c.providers.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Explain { config, method, url, headers, body, agent, tenant } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut parsed = Vec::new();
            for h in headers {
                let Some((k, v)) = h.split_once(':') else {
                    eprintln!("--header {h:?}: expected 'Name: value'");
                    return ExitCode::from(2);
                };
                parsed.push((k.trim().to_string(), v.trim().to_string()));
            }
            let body = match body.map(|f| std::fs::read(&f).map_err(|e| format!("--body {}: {e}", f.display()))).transpose() {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match explain(&config, &ExplainRequest { method, url, headers: parsed, agent_id: agent, tenant, body }) {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Audit { command: AuditCommand::Verify { file, expect_head } } => match credential_broker::audit::verify::verify_file(&file) {
            Ok(v) if expect_head.as_deref().is_some_and(|h| h != v.head) => {
                eprintln!(
                    "{}: chain intact over {} record(s) but its head {} is not the expected one (records removed from the end)",
                    file.display(),
                    v.records,
                    v.head
                );
                ExitCode::FAILURE
            }
            Ok(v) => {
                println!("{}: ok, {} record(s), head {}", file.display(), v.records, v.head);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: broken at {e}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}
