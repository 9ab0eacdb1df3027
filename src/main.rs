//! The `hubcast` binary: configuration, logs, one node, and signal handling; or, with a
//! subcommand, a tool (`hubcast token`).

use std::process::ExitCode;

use clap::Parser as _;
use hubcast::app::App;
use hubcast::config::{Cli, Command, Config};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        None => node(cli),
        Some(Command::Token(args)) => match hubcast::mint::run(&cli, &args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hubcast token: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Runs one node until a signal stops it.
#[tokio::main]
async fn node(cli: Cli) -> ExitCode {
    let log_format = cli.log_format;
    let _logs = hubcast::telemetry::init(log_format);
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hubcast: {e}");
            return ExitCode::from(2);
        }
    };
    let backplane = match &config.redis {
        None => "in-process backplane (single node; set --redis-url to run a cluster)".to_owned(),
        Some(r) => format!("Redis backplane (prefix '{}')", r.prefix),
    };
    let app = match App::build(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hubcast: {e}");
            return ExitCode::from(1);
        }
    };
    let node = app.node();
    tracing::info!(
        listen = %app.local_addr(),
        metrics = %app.metrics_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
        node = node.id(),
        hubs = node.hubs().len(),
        "hubcast serving on {}",
        backplane
    );
    match app.run(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
