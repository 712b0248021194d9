//! `GET /login` (the form), `POST /login` (a form or JSON: `name`, `password`, `next`) and
//! `POST /logout`.
//!
//! A sign-in starts a new session every time (its id in an `HttpOnly; SameSite=Lax` cookie,
//! `Secure` with the `__Host-` name on an https site) and goes back to `next`, a local path
//! (else the front page). Every failure says the same thing, whatever its cause.

use askama::Template;
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::index::root_for;
use super::{Client, Params, Peer, prefers_html, same_origin};
use crate::accounts;
use crate::error::AppError;
use crate::sign_in::{check_password, session_cookie, session_set_cookie};
use crate::state::AppState;

/// The largest sign-in body read.
const MAX_BODY: usize = 8 * 1024;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    root: &'a str,
    next: &'a str,
    name: &'a str,
    error: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct LoginFields {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn form(uri: Uri) -> Response {
    let root = root_for(uri.path());
    let next = Params::from_uri(&uri).ok().and_then(|p| p.get("next").map(str::to_owned)).unwrap_or_default();
    login_page(StatusCode::OK, &root, &local_path(&next, &root), "", None)
}

fn login_page(status: StatusCode, root: &str, next: &str, name: &str, error: Option<&str>) -> Response {
    let page = LoginPage { root, next, name, error };
    match page.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// `next` if it is a path on this site (`/...`, not `//host` or `/\host`), else the front
/// page (`root`): a sign-in never sends a browser to another site.
fn local_path(next: &str, root: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.bytes().all(|b| b.is_ascii_graphic());
    if local { next.to_owned() } else { root.to_owned() }
}

pub async fn sign_in(
    State(state): State<AppState>,
    Peer(peer): Peer,
    Client(client): Client,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (browser, root) = (prefers_html(&headers), root_for(uri.path()));
    let fields = match check_origin_and_decode(&state, peer, &headers, body).await {
        Ok(fields) => fields,
        Err(refused) => return refusal(browser, &root, &LoginFields::default(), refused),
    };
    let user = match check_password(&state, client, &fields.name, &fields.password).await {
        Ok(user) => user,
        Err(refused) => return refusal(browser, &root, &fields, refused),
    };
    let id = match accounts::open_session(&*state.store, &user, state.config.session_ttl).await {
        Ok(id) => id,
        Err(e) => return refusal(browser, &root, &fields, e.into()),
    };
    let https = state.site_of(peer, &headers).is_https();
    let cookie = session_set_cookie(https, Some(&id), state.config.session_ttl);
    let mut response = if browser {
        let next = local_path(&fields.next, &root);
        (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response()
    } else {
        Json(json!({ "name": user.name, "admin": user.admin })).into_response()
    };
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn check_origin_and_decode(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<LoginFields, AppError> {
    same_origin(state, peer, headers)?;
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| AppError::TooLarge { limit: MAX_BODY })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if json {
        serde_json::from_slice(&bytes).map_err(|e| AppError::Malformed(format!("malformed JSON body: {e}")))
    } else {
        serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| AppError::Malformed(format!("malformed form body: {e}")))
    }
}

/// A failed sign-in: the form again with the one message (keeping the name and `next`), or
/// the error as JSON; `Retry-After` when over the sign-in limits.
fn refusal(browser: bool, root: &str, fields: &LoginFields, refused: AppError) -> Response {
    if !browser {
        return refused.into_response();
    }
    let next = local_path(&fields.next, root);
    let mut page = login_page(refused.status(), root, &next, &fields.name, Some(&refused.public_message()));
    refused.add_headers(&mut page);
    page
}

/// Ends the session (if any) and clears the cookie; a browser goes back to `next`.
pub async fn sign_out(
    State(state): State<AppState>,
    Peer(peer): Peer,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (browser, root) = (prefers_html(&headers), root_for(uri.path()));
    if let Err(refused) = same_origin(&state, peer, &headers) {
        return refused.into_response();
    }
    if let Some(id) = session_cookie(&headers)
        && let Err(e) = state.store.delete_session(&accounts::hash_secret(id)).await
    {
        return AppError::from(e).into_response();
    }
    let https = state.site_of(peer, &headers).is_https();
    let cookie = session_set_cookie(https, None, state.config.session_ttl);
    let next = Params::from_uri(&uri).ok().and_then(|p| p.get("next").map(str::to_owned)).unwrap_or_default();
    let mut response = if browser {
        (StatusCode::SEE_OTHER, [(header::LOCATION, local_path(&next, &root))]).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn next_is_a_local_path_or_the_front_page() {
        assert_eq!(local_path("/rooms/team?x=1", "./"), "/rooms/team?x=1");
        for outside in ["https://evil.example/", "//evil.example", "/\\evil.example", "rooms/x", "", "/a b"] {
            assert_eq!(local_path(outside, "./"), "./", "{outside:?}");
        }
    }
}
