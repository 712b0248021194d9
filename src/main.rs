//! The ssechat binary: parse flags; run a command (`ssechat user ...`), or start logging,
//! bind, and hand over to the library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use ssechat::cli::Cli;
use ssechat::config::parse_args;
use ssechat::{AppState, run, server::shutdown_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { config, command } = parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // `--log` was checked when parsed.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).expect("a checked filter"))
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
    if let Some(command) = command {
        return ssechat::cli::run(command, &config).await;
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    for line in config.summary() {
        tracing::info!("{line}");
    }

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
    if let Err(e) = start_redirect(&state, addr.port()).await {
        eprintln!("ssechat: {e}");
        return ExitCode::FAILURE;
    }
    announce(if state.tls.is_some() { "https" } else { "http" }, addr);
    match run(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssechat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `--redirect-http`, if asked for, and serves it beside the TLS listener on `https_port`.
async fn start_redirect(state: &AppState, https_port: u16) -> Result<(), String> {
    let Some(redirect) = state.config.redirect_http.as_deref() else { return Ok(()) };
    if state.tls.is_none() {
        return Err("--redirect-http needs TLS on (--tls-cert and --tls-key, or --acme)".to_owned());
    }
    let plain = tokio::net::TcpListener::bind(redirect)
        .await
        .map_err(|e| format!("cannot listen on {redirect} (--redirect-http): {e}"))?;
    let bound = plain.local_addr().expect("a bound listener has an address");
    tracing::info!("redirecting http://{bound} to https");
    tokio::spawn(ssechat::tls::redirect::run(plain, state.clone(), https_port));
    Ok(())
}

/// Says where the server listens, on stdout (tests and scripts read it).
fn announce(scheme: &str, addr: std::net::SocketAddr) {
    println!("listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
}

/// Colour in the logs only on a terminal, and not there either with `NO_COLOR` set
/// (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
