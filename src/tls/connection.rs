//! One connection over TLS: the handshake, then hyper-util's auto builder serving HTTP/2
//! (ALPN `h2`) or HTTP/1.1 with the router. The plaintext fast path is for HTTP/1.1
//! without TLS only; here every request, streams included, goes through the router.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};
use tower::ServiceExt;

use bytes::Bytes;

use super::HSTS;
use super::idle::{InFlight, hold};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
use crate::connection::io::{Rewind, Watch};
use crate::fast_path;
use crate::feed::stall::StreamStall;
use crate::feed::{Refused, StallWatch};
use crate::routes::events::stream_response;
use crate::state::AppState;

/// Serves `socket` over TLS with `config` until the client leaves, the connection fails,
/// idle for `--idle-timeout`, or the server has stopped. Counted in the connection caps from accept; a connection
/// over the caps is closed before the handshake (there is no plain answer to give it).
pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    state: AppState,
    app: Router,
    config: Arc<ServerConfig>,
) {
    let Ok(_permit) = crate::connection::admit(&state, peer) else { return };
    // A client that takes nothing of what is written for --stall-timeout is cut off, the
    // whole connection: the same socket wrapper as on the plaintext hyper path.
    let watch = Watch::default();
    let socket = Rewind::new(socket, Bytes::new(), state.config.stall_timeout, watch.clone());
    let handshake = handshake(socket, config, state.acme_challenge.clone());
    let stream = match tokio::time::timeout(state.config.header_timeout, handshake).await {
        Ok(Ok(Some(stream))) => stream,
        Ok(Ok(None)) => return, // an ACME validation, answered
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let stall = (StreamStall(state.config.stall_timeout), StallWatch(Arc::clone(&watch.0.stalled)));
    let in_flight = InFlight::new();
    let service = TlsService { app, state: state.clone(), peer, stall, in_flight: in_flight.clone() };
    if let Err(e) = serve_http(&state, TokioIo::new(stream), service, &in_flight).await {
        tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
    }
}

/// The TLS handshake with `serving`; with ACME (`challenge`), a handshake that asks for
/// `acme-tls/1` is the CA validating the domain: answered with the challenge certificate,
/// then closed (`None`).
async fn handshake(
    socket: Rewind,
    serving: Arc<ServerConfig>,
    challenge: Option<Arc<ServerConfig>>,
) -> std::io::Result<Option<TlsStream<Rewind>>> {
    let Some(challenge) = challenge else { return TlsAcceptor::from(serving).accept(socket).await.map(Some) };
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), socket).await?;
    if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
        tracing::info!("answering an ACME TLS-ALPN-01 validation");
        let mut tls = start.into_stream(challenge).await?;
        tls.shutdown().await?;
        return Ok(None);
    }
    start.into_stream(serving).await.map(Some)
}

/// HTTP/2 or HTTP/1.1, as ALPN chose, until the connection ends or the server has stopped.
async fn serve_http(
    state: &AppState,
    io: TokioIo<TlsStream<Rewind>>,
    service: TlsService,
    in_flight: &InFlight,
) -> Result<(), BoxError> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    tokio::select! {
        result = http.as_mut() => return result,
        _ = state.stopped.cancelled() => {}
        _ = in_flight.idle_for(state.config.idle_timeout) => {}
    }
    // Stopped (streams have ended through the hub) or idle: finish what is in flight, close.
    http.as_mut().graceful_shutdown();
    http.await
}

/// An HTTP/2 request names its host in `:authority`, not in a `Host` header: the host
/// check, the site of the CSRF check and the redirects read `Host`, so it is put there.
fn host_from_authority<B>(request: &mut hyper::Request<B>) {
    if request.headers().contains_key(header::HOST) {
        return;
    }
    let host = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        request.headers_mut().insert(header::HOST, host);
    }
}

/// A plain stream request is served here, as on the plaintext fast path (the same
/// [`fast_path::open`]): a stream then costs its feed and hyper's stream, not the router's
/// layers, which matters when thousands arrive at once over a few HTTP/2 connections.
/// Anything else, and every refusal, is the router's.
async fn answer(
    app: Router,
    state: &AppState,
    peer: SocketAddr,
    mut request: hyper::Request<Incoming>,
) -> Response {
    let cors = !state.config.cors_origin.is_empty();
    if fast_path::plain_stream(request.method(), request.uri(), request.headers(), cors) {
        match fast_path::open(state, peer, request.uri(), request.headers()).await {
            Some(Ok(feed)) => return stream_response(feed, request.extensions()),
            Some(Err(refused)) => {
                request.extensions_mut().insert(Refused(refused));
            }
            None => {}
        }
    }
    let Ok(response) = app.oneshot(request).await;
    response
}

/// The router as a hyper service for one TLS connection. Each request learns its peer and
/// both stall cut-offs (its own per stream, and the connection's); each answer carries HSTS.
#[derive(Clone)]
struct TlsService {
    app: Router,
    state: AppState,
    peer: SocketAddr,
    stall: (StreamStall, StallWatch),
    /// What keeps the connection from counting as idle.
    in_flight: InFlight,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for TlsService {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Answer {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.stall.0);
        request.extensions_mut().insert(self.stall.1.clone());
        host_from_authority(&mut request);
        let (app, state, peer) = (self.app.clone(), self.state.clone(), self.peer);
        let busy = self.in_flight.begin();
        Box::pin(async move {
            let mut response = answer(app, &state, peer, request).await.map(|body| hold(body, busy));
            response.headers_mut().insert("strict-transport-security", HeaderValue::from_static(HSTS));
            Ok(response)
        })
    }
}
