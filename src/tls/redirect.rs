//! `--redirect-http`: a plain listener that sends every request to its https URL (`308`,
//! so a post stays a post).

use std::convert::Infallible;

use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::state::AppState;

/// Answers every request on `listener` with `308` to the same path and query over https:
/// on `--public-url`'s host and port if it is an https URL, else on the request's host and
/// `https_port` (the TLS listener's). Runs until the server has stopped.
pub async fn run(listener: TcpListener, state: AppState, https_port: u16) {
    let connections = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            _ = state.stopped.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = crate::connection::admit(&state, peer) else { continue };
        let state = state.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(|request| {
                std::future::ready(Ok::<_, Infallible>(redirect(&state, https_port, &request)))
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.header_timeout)
                .serve_connection(TokioIo::new(socket), service);
            let _ = tokio::time::timeout(state.config.idle_timeout, http).await;
        });
    }
    connections.close();
    connections.wait().await;
}

/// The `308` for one request; a host this server does not answer for gets `421`.
fn redirect(state: &AppState, https_port: u16, request: &Request<Incoming>) -> axum::response::Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let origin = match state.config.public_url.as_ref().map(|url| url.site()).filter(|s| s.is_https()) {
        Some(site) => site.to_string(),
        None => {
            let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            let site = crate::limits::Site::new(Some("http"), host, crate::limits::Port::Default);
            if let Err(refused) = state.hosts.check(site.host()) {
                return refused.into_response();
            }
            https_origin(site.host(), https_port)
        }
    };
    let Ok(location) = HeaderValue::from_str(&format!("{origin}{path}")) else {
        return (StatusCode::BAD_REQUEST, "the request's host or path is not a valid URL").into_response();
    };
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// `https://host`, with the port unless it is 443.
pub fn https_origin(host: &str, port: u16) -> String {
    match port {
        443 => format!("https://{host}"),
        port => format!("https://{host}:{port}"),
    }
}
