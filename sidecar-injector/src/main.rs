//! `sidecar-injector`: thin entry point; see the library for the work.
#![forbid(unsafe_code)]

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use sidecar_injector::cli::{Cli, Command, InjectArgs, ServeArgs};
use sidecar_injector::offline::{inject_manifests, OfflineOptions};
use sidecar_injector::server::{serve, ReloadingCert, ServerSettings};
use sidecar_injector::InjectorConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_server(args),
        Command::Inject(args) => run_inject(args),
        Command::CheckConfig { config } => InjectorConfig::load(&config).map(|_| println!("{}: ok", config.display())).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidecar-injector: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<InjectorConfig> {
    Ok(match path {
        Some(path) => InjectorConfig::load(path)?,
        None => InjectorConfig::default(),
    })
}

fn run_inject(args: InjectArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let options = OfflineOptions { namespace: args.namespace, namespace_label: args.namespace_label };
    let injected = inject_manifests(&text, &config, &options)?;
    for warning in &injected.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", injected.yaml);
    Ok(())
}

fn run_server(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .init();
    // Everything is loaded and checked before the port is bound.
    let config = Arc::new(load_config(args.config.as_deref())?);
    let cert = ReloadingCert::load(&args.tls_cert, &args.tls_key)?;
    let settings = ServerSettings { cert_reload_interval: Duration::from_secs(args.cert_reload_interval_secs.max(1)), ..ServerSettings::default() };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(address = %listener.local_addr()?, "serving admission webhook");
        serve(listener, cert, config, settings, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining");
}
