//! Who signed in: one async function, [`identify`], that the router's layer and the fast
//! path for streams both call, so a request is the same user (or guest) on either path.
//!
//! A request signs in by `Authorization: Bearer TOKEN`, by Basic `name:password`, or by the
//! session cookie `/login` set. A wrong token or password is `401`, never a guest. A stale
//! cookie (signed out, expired, password changed) is a guest: a browser can't help sending
//! it. A request with neither costs nothing: no store call.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;

use crate::accounts::{self, User};
use crate::auth::Identity;
use crate::domain::Author;
use crate::error::AppError;
use crate::state::AppState;

/// The session cookie on a plain-http site...
pub const SESSION_COOKIE: &str = "ssechat_session";
/// ...and on an https site: `__Host-` makes the browser insist on `Secure`, `Path=/` and
/// no `Domain`, so no other host can set it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-ssechat_session";

pub use crate::auth::Credential;

/// Who a request is from, and what proved it.
#[derive(Debug, Clone, Default)]
pub struct SignedIn {
    pub identity: Identity,
    /// `None` for a guest.
    pub credential: Option<Credential>,
    /// A session whose expiry moved: its cookie is set again, so the browser keeps it as long.
    pub renewed_session: Option<String>,
}

impl From<User> for SignedIn {
    fn from(user: User) -> Self {
        let credential = Credential { user: user.name.clone(), epoch: user.epoch };
        let identity = Identity::User { name: user.name, admin: user.admin };
        Self { identity, credential: Some(credential), renewed_session: None }
    }
}

/// The identity of a request, from its `Authorization` header or its session cookie.
pub async fn identify(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<SignedIn, AppError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let client = state.client_of(peer, headers);
        return by_authorization(state, client, value).await;
    }
    let Some(id) = session_cookie(headers) else { return Ok(SignedIn::default()) };
    match accounts::session_user(&*state.store, id, state.config.session_ttl).await? {
        Some((user, renewed)) => {
            Ok(SignedIn { renewed_session: renewed.then(|| id.to_owned()), ..SignedIn::from(user) })
        }
        None => Ok(SignedIn::default()),
    }
}

async fn by_authorization(
    state: &AppState,
    client: IpAddr,
    value: &HeaderValue,
) -> Result<SignedIn, AppError> {
    let value = value.to_str().unwrap_or("");
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return match accounts::token_user(&*state.store, rest).await? {
            Some(user) => Ok(user.into()),
            None => Err(AppError::Unauthorized(
                "the bearer token is not valid (unknown, deleted or expired)".to_owned(),
            )),
        };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let (name, password) = decode_basic(rest)?;
        return check_password(state, client, &name, &password).await.map(SignedIn::from);
    }
    Err(AppError::Unauthorized(
        "unsupported Authorization header: send `Bearer TOKEN` or Basic credentials (curl -u name:password)"
            .to_owned(),
    ))
}

fn decode_basic(encoded: &str) -> Result<(String, String), AppError> {
    let malformed =
        || AppError::Unauthorized("malformed Basic credentials: expected base64 of name:password".to_owned());
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let (name, password) = text.split_once(':').ok_or_else(malformed)?;
    Ok((name.to_owned(), password.to_owned()))
}

/// What every failed password check says, whatever the cause: no hint which names exist.
pub const WRONG_NAME_OR_PASSWORD: &str = "wrong name or password";

/// The user `name` if `password` is theirs, within the sign-in limits. An unknown name and a
/// wrong password take the same time and get the same `401`.
pub async fn check_password(
    state: &AppState,
    client: IpAddr,
    name: &str,
    password: &str,
) -> Result<User, AppError> {
    state.sign_ins.admit(client, name)?;
    match accounts::check_sign_in(&*state.store, name, password).await? {
        Some(user) => Ok(user),
        None => {
            state.sign_ins.failed(client, name);
            Err(AppError::Unauthorized(WRONG_NAME_OR_PASSWORD.to_owned()))
        }
    }
}

/// The session id the browser sent, under either cookie name.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE || *name == SECURE_SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` that starts a session (`id`) or, with `None`, ends it; `Secure` with the
/// `__Host-` name when the site is https.
pub fn session_set_cookie(https: bool, id: Option<&str>, ttl: std::time::Duration) -> HeaderValue {
    let name = if https { SECURE_SESSION_COOKIE } else { SESSION_COOKIE };
    let secure = if https { "; Secure" } else { "" };
    let (value, max_age) = match id {
        Some(id) => (id, ttl.as_secs()),
        None => ("", 0),
    };
    let cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).expect("session ids are URL-safe base64")
}

/// Refuses (`403`) a guest's use of a registered name, or of one that looks like it (the
/// same skeleton: another case, another script's look-alike letters), to post or to be
/// named in a room. Read from the node's snapshot (`policy`): no store call; a user added
/// on any node is in it within a second. A snapshot that was never read and cannot be read
/// now lets the name pass (logged): the send that follows meets the same store, and its
/// answer is the one the client can act on.
pub async fn guest_may_use(state: &AppState, name: &Author) -> Result<(), AppError> {
    let dir = match state.policy.directory().await {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check whether a guest's name is registered");
            return Ok(());
        }
    };
    let Some(registered) = dir.registered(name) else { return Ok(()) };
    let registered = registered.as_str();
    let why = if registered.to_lowercase() == name.as_str().to_lowercase() {
        format!("the name {:?} belongs to a registered user", name.as_str())
    } else {
        format!("the name {:?} looks like the registered user {registered:?}", name.as_str())
    };
    Err(AppError::Forbidden(format!("{why}: sign in as them, or pick another name")))
}

/// The name a post or a typing signal goes under: a signed-in user's own (whatever was
/// typed), or a guest's typed name if it is no registered user's ([`guest_may_use`]).
/// `typed` is validated as the `author` field.
pub async fn author_for(
    state: &AppState,
    identity: &Identity,
    typed: Option<&str>,
) -> Result<Author, AppError> {
    if let Some(user) = identity.user() {
        return Ok(user.clone());
    }
    let author = Author::parse(typed.unwrap_or(""))?;
    guest_may_use(state, &author).await?;
    Ok(author)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_session_cookie_is_found_under_either_name_among_others() {
        assert_eq!(session_cookie(&cookies(&["a=1; ssechat_session=abc; b=2"])), Some("abc"));
        assert_eq!(session_cookie(&cookies(&["a=1", "__Host-ssechat_session=xyz"])), Some("xyz"));
        assert_eq!(session_cookie(&cookies(&["ssechat_session="])), None);
        assert_eq!(session_cookie(&cookies(&["not_ssechat_session=abc"])), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn basic_credentials_decode_or_say_what_is_wrong() {
        assert_eq!(decode_basic("YW5hOnB3OmNvbG9u").unwrap(), ("ana".into(), "pw:colon".into()));
        for bad in ["not base64!", "bm9jb2xvbg=="] {
            let e = decode_basic(bad).unwrap_err();
            assert!(
                matches!(e, AppError::Unauthorized(_)) && e.to_string().contains("name:password"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_cookie_is_secure_with_the_host_prefix_on_https_only() {
        let ttl = std::time::Duration::from_secs(60);
        let plain = session_set_cookie(false, Some("id"), ttl);
        assert_eq!(plain, "ssechat_session=id; Path=/; HttpOnly; SameSite=Lax; Max-Age=60");
        let https = session_set_cookie(true, Some("id"), ttl);
        assert_eq!(https, "__Host-ssechat_session=id; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure");
        assert!(
            session_set_cookie(false, None, ttl)
                .to_str()
                .unwrap()
                .contains("=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
        );
    }
}
