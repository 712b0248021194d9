//! The admin API for bans: `GET /admin/bans`, `POST /admin/bans` (JSON `target`, and
//! optionally `room` and `for`, like `ssechat ban`), `DELETE /admin/bans?target=T&room=R`.
//! Administrators only: a guest gets `401`, anyone else `403`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Params, Peer, same_origin};
use crate::auth::Identity;
use crate::domain::{FieldError, RoomName};
use crate::error::AppError;
use crate::policy::{Ban, BanTarget};
use crate::state::AppState;

/// A ban as the API shows it.
#[derive(Debug, Serialize)]
pub struct BanView {
    target: String,
    /// `null`: every room.
    room: Option<String>,
    /// RFC 3339; `null`: until lifted.
    until: Option<String>,
    /// What a banned sender is told.
    description: String,
    /// Messages deleted with the ban (`purge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    purged: Option<u64>,
}

impl From<&Ban> for BanView {
    fn from(ban: &Ban) -> Self {
        Self {
            target: ban.target.to_string(),
            room: ban.room.as_ref().map(ToString::to_string),
            until: ban.until.map(|t| t.rfc3339()),
            description: ban.describe(),
            purged: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NewBan {
    target: String,
    room: Option<String>,
    /// A duration such as `10m` or `7d`.
    #[serde(rename = "for")]
    duration: Option<String>,
    /// Also delete the user's recent messages (`ssechat ban --purge`).
    #[serde(default)]
    purge: bool,
}

/// Refuses anyone but an administrator.
fn admin_only(who: &Identity) -> Result<(), AppError> {
    match who {
        Identity::Guest => {
            Err(AppError::Unauthorized("the admin API needs an administrator: sign in".to_owned()))
        }
        _ if who.is_admin() => Ok(()),
        Identity::User { name, .. } => Err(AppError::Forbidden(format!("{name} is not an administrator"))),
    }
}

pub async fn list(State(state): State<AppState>, who: Identity) -> Result<Json<Vec<BanView>>, AppError> {
    admin_only(&who)?;
    let dir = state.policy.reload().await?;
    Ok(Json(dir.bans.iter().map(BanView::from).collect()))
}

pub async fn add(
    State(state): State<AppState>,
    Peer(peer): Peer,
    who: Identity,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<BanView>), AppError> {
    admin_only(&who)?;
    same_origin(&state, peer, &headers)?;
    let new: NewBan = serde_json::from_value(body)
        .map_err(|e| AppError::Malformed(format!("expected {{\"target\", \"room\"?, \"for\"?}}: {e}")))?;
    let until = match new.duration.as_deref() {
        None => None,
        Some(text) => {
            let duration = crate::config::positive_duration(text).map_err(|e| FieldError::new("for", e))?;
            Some(crate::cli::ban_until(duration).map_err(|e| FieldError::new("for", e))?)
        }
    };
    let ban = Ban {
        target: BanTarget::parse(&new.target)?,
        room: new.room.as_deref().map(RoomName::parse).transpose()?,
        until,
    };
    let purge = match new.purge {
        true => Some(crate::takeback::purged_user(&ban).map_err(|e| FieldError::new("purge", e))?),
        false => None,
    };
    state.store.add_ban(&ban).await?;
    // This node applies it at once (and ends the streams it covers); others within a poll.
    state.policy.reload().await?;
    let purged = match purge {
        Some(user) => Some(crate::takeback::purge(&*state.store, user, ban.room.as_ref()).await?),
        None => None,
    };
    Ok((StatusCode::CREATED, Json(BanView { purged, ..BanView::from(&ban) })))
}

pub async fn remove(
    State(state): State<AppState>,
    Peer(peer): Peer,
    who: Identity,
    headers: HeaderMap,
    uri: Uri,
) -> Result<StatusCode, AppError> {
    admin_only(&who)?;
    same_origin(&state, peer, &headers)?;
    let params = Params::from_uri(&uri)?;
    let target = params.get("target").ok_or_else(|| FieldError::new("target", "is required"))?;
    let target = BanTarget::parse(target)?;
    let room = params.get("room").map(RoomName::parse).transpose()?;
    match state.store.remove_ban(&target, room.as_ref()).await? {
        0 => Err(AppError::NotFound(format!("no ban on {target} in that scope"))),
        _ => {
            state.policy.reload().await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::config::{Config, StoreUrl};

    /// Basic credentials of a user the test added (password `pw`).
    fn user(name: &str) -> String {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{name}:pw")))
    }

    async fn call(
        state: &AppState,
        who: String,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost")
            .header("authorization", who);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
        let response = crate::router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn an_admin_bans_lists_and_lifts_and_no_one_else_may() {
        let mut config = Config::defaults();
        config.store = StoreUrl::Memory;
        let state = AppState::new(config).await.unwrap();
        for (name, admin) in [("root", true), ("bob", false)] {
            crate::accounts::add_user(&*state.store, name, "pw", admin).await.unwrap();
        }
        let admin = user("root");
        let ban = serde_json::json!({"target": "203.0.113.7", "room": "lobby", "for": "1h"});
        let (status, body) = call(&state, user("bob"), Method::POST, "/admin/bans", Some(ban.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"], "bob is not an administrator");
        let (status, body) = call(&state, admin.clone(), Method::POST, "/admin/bans", Some(ban)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["target"], "203.0.113.7/32");
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .starts_with("203.0.113.7/32 is banned from room \"lobby\" until 20")
        );
        let (status, list) = call(&state, admin.clone(), Method::GET, "/admin/bans", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);
        let client: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let lobby = RoomName::parse("lobby").unwrap();
        let refused = state.admit(&Identity::Guest, client, &lobby, crate::policy::watch::Need::Write).await;
        assert!(matches!(refused, Err(AppError::Forbidden(_))), "applied on this node at once: {refused:?}");
        let uri = "/admin/bans?target=203.0.113.7";
        let (status, _) = call(&state, admin.clone(), Method::DELETE, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the scope must match");
        let (status, _) =
            call(&state, admin.clone(), Method::DELETE, &format!("{uri}&room=lobby"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let bad = serde_json::json!({"target": "10.0.0.300"});
        let (status, body) = call(&state, admin, Method::POST, "/admin/bans", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("not an IP address"), "{body}");
    }
}
