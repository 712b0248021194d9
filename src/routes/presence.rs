//! `GET /rooms/{room}/presence` (who is in the room) and `POST /typing` (someone is typing).

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::same_origin;
use super::send::decode;
use crate::domain::PresenceView;
use crate::domain::{Author, RoomName};
use crate::error::AppError;
use crate::metrics::Limited;
use crate::state::AppState;

/// The least time between two typing signals from one author in one room.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(1);

pub async fn presence(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> Result<Json<PresenceView>, AppError> {
    let room = RoomName::parse(&room)?;
    let local = state.presence.local(&room);
    Ok(Json(state.store.presence(&room, local).await?))
}

/// A form or JSON body with `room` and `author`. `204` when sent on; `429` with
/// `Retry-After` when the same author typed in the same room under a second ago.
pub async fn typing(State(state): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    if let Err(e) = same_origin(&headers, &state.config.cors_origin) {
        return e.into_response();
    }
    let fields = match decode(&uri, &headers, body).await {
        Ok(fields) => fields,
        Err(e) => return e.into_response(),
    };
    let parsed = RoomName::parse(fields.room.as_deref().unwrap_or(RoomName::DEFAULT))
        .and_then(|room| Ok((room, Author::parse(fields.author.as_deref().unwrap_or(""))?)));
    let (room, author) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return AppError::from(e).into_response(),
    };
    {
        let mut last = state.typing_limits.lock().expect("typing lock poisoned");
        let now = Instant::now();
        // Keep the map small: forget signals older than the interval.
        last.retain(|_, at| now.duration_since(*at) < TYPING_INTERVAL);
        let key = (room.clone(), author.as_str().to_owned());
        if last.contains_key(&key) {
            state.metrics.limited(Limited::Typing);
            let mut response =
                AppError::TooManyRequests("typing signals are limited to one per second".into())
                    .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("valid header"));
            return response;
        }
        last.insert(key, now);
    }
    match state.store.typing(&room, &author).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}
