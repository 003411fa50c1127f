//! Thin entry point: parse, validate, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use credential_broker::cli::{AuditCommand, Cli, Command, GrantsCommand};
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
        Command::Explain { config, method, url, sql, database, headers, body, agent, tenant } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(sql) = sql {
                let identity = credential_broker::providers::Identity {
                    agent_id: agent.unwrap_or_else(|| config.identity.agent_id.clone()),
                    tenant: tenant.unwrap_or_else(|| config.identity.tenant.clone()),
                    labels: config.identity.labels.clone(),
                };
                return match credential_broker::postgres::statements::explain(&config, &sql, database.as_deref(), &identity) {
                    Ok(v) => {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(2)
                    }
                };
            }
            let url = url.unwrap_or_default();
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
        Command::Audit { command: AuditCommand::Verify { files, expect_head } } => {
            let names = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" ");
            match credential_broker::audit::verify::verify_files(&files) {
                Ok(v) if expect_head.as_deref().is_some_and(|h| h != v.head) => {
                    eprintln!(
                        "{names}: chain intact over {} record(s) but its head {} is not the expected one (records removed from the end)",
                        v.records, v.head
                    );
                    ExitCode::FAILURE
                }
                Ok(v) => {
                    println!("{names}: ok, {} record(s), head {}", v.records, v.head);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Grants { command } => grants(command),
        Command::IptablesInit { proxy_port, ports, exclude_uid, iptables, dry_run } => {
            iptables_init(credential_broker::iptables::RedirectSpec { proxy_port, ports, exclude_uid, binary: iptables }, dry_run)
        }
    }
}

/// `iptables-init`: print or install the transparent-mode rules.
fn iptables_init(spec: credential_broker::iptables::RedirectSpec, dry_run: bool) -> ExitCode {
    use credential_broker::iptables;
    if let Err(e) = spec.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if dry_run {
        print!("{}", iptables::dry_run(&spec));
        return ExitCode::SUCCESS;
    }
    match iptables::apply(&spec) {
        Ok(ran) => {
            for command in ran {
                println!("{command}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `grants list|revoke`: one call to the broker API; errors go to stderr with a non-zero exit.
fn grants(command: GrantsCommand) -> ExitCode {
    use credential_broker::admin::client::{call, grants_table};
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            GrantsCommand::List { admin, json } => {
                let v = call(&admin.admin_url, &admin.token_file, http::Method::GET, "/v1/grants", None).await?;
                Ok(if json { serde_json::to_string_pretty(&v)? } else { grants_table(&v) })
            }
            GrantsCommand::Revoke { id: Some(id), admin, .. } => {
                let path = format!("/v1/grants/{}/revoke", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>());
                let v = call(&admin.admin_url, &admin.token_file, http::Method::POST, &path, None).await?;
                Ok(serde_json::to_string_pretty(&v)?)
            }
            GrantsCommand::Revoke { id: None, agent, tenant, provider, all, admin } => {
                let filter = serde_json::json!({"agent_id": agent, "tenant": tenant, "provider": provider, "all": all});
                let filter: serde_json::Map<String, serde_json::Value> =
                    filter.as_object().into_iter().flatten().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
                let v = call(&admin.admin_url, &admin.token_file, http::Method::POST, "/v1/grants/revoke", Some(filter.into())).await?;
                Ok(serde_json::to_string_pretty(&v)?)
            }
        }
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e: anyhow::Error = e;
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
