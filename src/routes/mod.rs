//! One module per endpoint, plus what they share: content negotiation and query parsing.

pub mod admin;
pub mod assets;
pub mod events;
pub mod health;
pub mod history;
pub mod index;
pub mod login;
pub mod presence;
pub mod rooms;
pub mod send;
pub mod takeback;

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{Access, Identity};
use crate::domain::{FieldError, MAX_MESSAGE_ID, MessageId};
use crate::error::AppError;
use crate::policy::watch::Need;
use crate::state::AppState;

/// The index into `offered` the `Accept` header prefers. Ties go to the earlier offer, so
/// `*/*` (curl) picks the first; no `Accept` at all also picks the first.
pub fn negotiate(headers: &HeaderMap, offered: &[&str]) -> usize {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let quality = |offer: &str| -> f32 {
        let (offer_type, _) = offer.split_once('/').unwrap_or((offer, ""));
        // (specificity, q) of the most specific range that matches.
        let mut best: Option<(u8, f32)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .next()
                .unwrap_or(1.0);
            let specificity = if media == offer {
                3
            } else if media.strip_suffix("/*") == Some(offer_type) {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen = 0;
    let mut chosen_q = f32::MIN;
    for (i, offer) in offered.iter().enumerate() {
        let q = quality(offer);
        if q > chosen_q {
            chosen = i;
            chosen_q = q;
        }
    }
    chosen
}

/// True for a browser's form post or page load: `text/html` wins over JSON.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    negotiate(headers, &["application/json", "text/html"]) == 1
}

/// The TCP peer of a request. Without a socket (a `oneshot` test) it is the loopback address.
pub struct Peer(pub std::net::SocketAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
        Ok(Peer(peer))
    }
}

/// The client a request comes from (see `AppState::client_of`).
pub struct Client(pub std::net::IpAddr);

impl axum::extract::FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Peer(peer) = Peer::from_request_parts(parts, state).await?;
        Ok(Client(state.client_of(peer, &parts.headers)))
    }
}

/// Who asks and from where: what access rules, bans and slow mode go by.
pub struct Viewer {
    pub who: Identity,
    pub client: std::net::IpAddr,
}

impl axum::extract::FromRequestParts<AppState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let who = Identity::from_request_parts(parts, state).await?;
        let Client(client) = Client::from_request_parts(parts, state).await?;
        Ok(Viewer { who, client })
    }
}

impl Viewer {
    /// Refuses (`401`/`403`) unless the viewer may do `need` in `room`.
    pub async fn admit(
        &self,
        state: &AppState,
        room: &crate::domain::RoomName,
        need: Need,
    ) -> Result<Access, AppError> {
        state.admit(&self.who, self.client, room, need).await
    }
}

/// One name or value of a form: `+` is a space and each `%` starts a `%XX` escape (the
/// `percent-encoding` crate would pass a stray `%` through, and `%ZZ` would be stored as is).
pub fn unescape_form(part: &str) -> Result<String, String> {
    let bytes = part.as_bytes();
    let escape_ok = |i: usize| bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
    if let Some((i, _)) = part.match_indices('%').find(|&(i, _)| !escape_ok(i)) {
        let shown: String = part[i..].chars().take(3).collect();
        return Err(format!("{shown:?} is not a %XX escape (a literal % is sent as %25)"));
    }
    percent_encoding::percent_decode_str(&part.replace('+', " "))
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{part:?} is not valid UTF-8 once decoded"))
}

/// The query parameters any endpoint reads, for errors that name them.
const QUERY_PARAMETERS: [&str; 6] = ["room", "since", "limit", "name", "reader", "presence"];

/// Query-string parameters, decoded once, with errors that name the parameter.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decoded strictly, as form bodies are: a `%` that does not start a `%XX` escape, or
    /// bytes that are not UTF-8, are refused, naming the parameter.
    pub fn from_uri(uri: &Uri) -> Result<Self, AppError> {
        let query = uri.query().unwrap_or("");
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = unescape_form(name).map_err(|why| {
                AppError::Malformed(format!("malformed query string: a parameter name {why}"))
            })?;
            let value =
                unescape_form(value).map_err(|why| match QUERY_PARAMETERS.iter().find(|&&p| p == name) {
                    Some(known) => FieldError::new(known, format!("malformed query string: {why}")).into(),
                    None => AppError::Malformed(format!("malformed query string: {name:?} {why}")),
                })?;
            pairs.push((name, value));
        }
        Ok(Params(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A `limit` parameter: `default` when absent, else 1 to `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, AppError> {
        let Some(value) = self.get("limit") else { return Ok(default) };
        match value.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(FieldError::new("limit", format!("{value:?} is not a number from 1 to {max}")).into()),
        }
    }

    /// A message id parameter such as `since`.
    pub fn id(&self, name: &'static str) -> Result<Option<MessageId>, AppError> {
        self.get(name).map(|v| parse_id(name, v)).transpose()
    }
}

pub fn parse_id(name: &'static str, value: &str) -> Result<MessageId, AppError> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let problem = format!("{value:?} is not a message id (a whole number, 0 or more)");
        return Err(FieldError::new(name, problem).into());
    }
    match digits.parse::<MessageId>() {
        Ok(id) if id <= MAX_MESSAGE_ID => Ok(id),
        _ => Err(FieldError::new(
            name,
            format!("{value:?} is larger than any message id (at most {MAX_MESSAGE_ID})"),
        )
        .into()),
    }
}

/// The headers every response carries: no inline script can run (the page has none), no
/// content is sniffed into another type, no URL leaks to other sites, and caches keep
/// answers to different origins apart (CORS may answer them differently).
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("vary", "origin"),
];

pub async fn security_headers(mut response: Response) -> Response {
    for (name, value) in SECURITY_HEADERS {
        response.headers_mut().insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}

/// CORS, off (no layer at all: `OPTIONS` is a method like any other, answered `405`)
/// unless `--cors-origin` names origins.
pub fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed: Vec<axum::http::HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    if allowed.is_empty() {
        return None;
    }
    // `Vary` is set with the security headers, the same on every response.
    let layer = CorsLayer::new()
        .vary([])
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            "last-event-id".parse().unwrap(),
            "idempotency-key".parse().unwrap(),
        ])
        // What a script needs to read from a `/send` answer: the key of an unknown outcome.
        .expose_headers([
            "idempotency-key".parse().unwrap(),
            "idempotent-replayed".parse().unwrap(),
            header::RETRY_AFTER,
        ]);
    Some(layer)
}

/// Refuses a browser's write request from another site (CSRF): see [`cross_site`].
pub fn same_origin(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    match cross_site(state, peer, headers) {
        None => Ok(()),
        Some(why) => Err(AppError::Forbidden(format!(
            "cross-site request refused: {why}; post from a page of this site"
        ))),
    }
}

/// Why a browser's request comes from a page of another site, or `None` when it comes from
/// this site (or from no browser). Judged by `Sec-Fetch-Site` or, from browsers that don't
/// send it (any on a plain-http origin), by `Origin` against the site the browser used
/// (`AppState::site_of`: behind a trusted proxy, what the proxy says). Clients that send
/// neither (curl, scripts) are not browsers being tricked. Origins named by
/// `--cors-origin` count as this site.
pub fn cross_site(state: &AppState, peer: std::net::SocketAddr, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("(not text)"));
    if origin.is_some_and(|o| state.config.cors_origin.iter().any(|c| c == o)) {
        return None;
    }
    if let Some(site) = headers.get("sec-fetch-site").map(|v| v.to_str().unwrap_or("(not text)")) {
        return match site {
            "same-origin" | "none" => None,
            other => Some(format!("the browser says the request comes from a {other} page")),
        };
    }
    let origin = origin?;
    let site = state.site_of(peer, headers);
    (!site.admits(origin)).then(|| format!("the page is from {origin}, not from this site ({site})"))
}

/// Answers `421` to a request for a host this server does not answer for
/// (`AppState::host_allowed`), before any route sees it.
pub async fn host_allowed(
    axum::extract::State(state): axum::extract::State<AppState>,
    Peer(peer): Peer,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Err(refused) = state.host_allowed(peer, request.headers()) else {
        return next.run(request).await;
    };
    if prefers_html(request.headers()) {
        index::error_page(refused.status(), &refused.to_string(), "")
    } else {
        refused.into_response()
    }
}

/// The sign-in layer: puts the request's `Identity` (and `Credential`) in its
/// extensions, or answers `401` for a wrong credential. A stream the fast path already
/// tried and refused is left to its handler, which answers that refusal.
pub async fn sign_in(
    axum::extract::State(state): axum::extract::State<AppState>,
    Peer(peer): Peer,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.extensions().get::<crate::feed::Refused>().is_some() {
        return next.run(request).await;
    }
    match crate::sign_in::identify(&state, peer, request.headers()).await {
        Ok(crate::sign_in::SignedIn { identity, credential, renewed_session }) => {
            let https = state.site_of(peer, request.headers()).is_https();
            request.extensions_mut().insert(identity);
            if let Some(credential) = credential {
                request.extensions_mut().insert(credential);
            }
            let mut response = next.run(request).await;
            if let Some(id) = renewed_session
                && !response.headers().contains_key(axum::http::header::SET_COOKIE)
            {
                let cookie = crate::sign_in::session_set_cookie(https, Some(&id), state.config.session_ttl);
                response.headers_mut().insert(axum::http::header::SET_COOKIE, cookie);
            }
            response
        }
        Err(refused) if prefers_html(request.headers()) => {
            let mut page = index::error_page(
                refused.status(),
                &refused.to_string(),
                &index::root_for(request.uri().path()),
            );
            refused.add_headers(&mut page);
            page
        }
        Err(refused) => refused.into_response(),
    }
}

pub async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let message = format!("no such page: {} {}", method, uri.path());
    if prefers_html(&headers) {
        index::error_page(axum::http::StatusCode::NOT_FOUND, &message, "")
    } else {
        AppError::NotFound(message).into_response()
    }
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    AppError::MethodNotAllowed(format!("{} does not accept {}", uri.path(), method)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn negotiation() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(&accept(browser)));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&HeaderMap::new()));
        let streams = ["text/event-stream", "application/x-ndjson", "text/plain"];
        assert_eq!(negotiate(&accept("text/event-stream"), &streams), 0);
        assert_eq!(negotiate(&accept("*/*"), &streams), 0);
        assert_eq!(negotiate(&accept("text/plain"), &streams), 2);
        assert_eq!(negotiate(&accept("application/x-ndjson"), &streams), 1);
        assert_eq!(negotiate(&accept("text/*;q=0.5, application/x-ndjson;q=0.4"), &streams), 0);
        assert_eq!(negotiate(&accept(browser), &streams), 0);
    }
}
