//! The ssechat binary: parse flags; run a command (`ssechat user ...`), or start logging,
//! bind, and hand over to the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ssechat::cli::Cli;
use ssechat::{AppState, run, server::shutdown_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { config, command } = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    if let Some(command) = command {
        return ssechat::cli::run(command, &config).await;
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }

    // Before anything is opened: a bad cache directory or CA file is said at once.
    let acme = match config.acme.enabled().then(|| ssechat::acme::acme_acceptor(&config.acme)).transpose() {
        Ok(acme) => acme,
        Err(e) => {
            eprintln!("ssechat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("ssechat: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let state = match AppState::new(config).await {
        Ok(state) => state,
        Err(e) => {
            eprintln!("ssechat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("a bound listener has an address");
    let served = match acme {
        Some((tls, renew)) => {
            tokio::spawn(renew);
            announce("https", addr);
            ssechat::acme::serve(listener, state, tls, shutdown_signal()).await
        }
        None => {
            announce("http", addr);
            run(listener, state, shutdown_signal()).await
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssechat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Says where the server listens, on stdout (tests and scripts read it).
fn announce(scheme: &str, addr: std::net::SocketAddr) {
    println!("listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
}
