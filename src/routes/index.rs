//! `GET /` and `GET /rooms/{room}`: the server-rendered room page, and the error page.
//!
//! Every URL in a page is relative to `root` (`./`, `../`, ...), worked out from the
//! request path, so the app works unchanged under any path prefix behind a proxy.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

use crate::app::AppState;
use crate::domain::{Message, RoomName};
use crate::error::AppError;
use crate::store::Range;

#[derive(Template)]
#[template(path = "room.html")]
struct RoomPage<'a> {
    root: &'a str,
    room: &'a str,
    messages: Vec<MessageView<'a>>,
    /// Active rooms, for switching.
    rooms: Vec<RoomLink>,
    /// Where the page's EventSource starts, so there is no gap and no duplicate.
    last_id: u64,
    author: &'a str,
    text: &'a str,
    error: Option<&'a str>,
}

struct MessageView<'a> {
    id: u64,
    author: &'a str,
    text: &'a str,
    time: String,
    clock: String,
}

impl<'a> From<&'a Message> for MessageView<'a> {
    fn from(m: &'a Message) -> Self {
        Self {
            id: m.id,
            author: m.author.as_str(),
            text: m.text.as_str(),
            time: m.time.rfc3339(),
            clock: m.time.clock(),
        }
    }
}

struct RoomLink {
    name: String,
    messages: u64,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    root: &'a str,
    status: StatusCode,
    message: &'a str,
}

/// Rooms listed on a page.
const ROOM_LINKS: usize = 20;

/// What a form post left behind when it was refused: shown again with the reason.
#[derive(Default)]
pub struct Draft<'a> {
    pub author: &'a str,
    pub text: &'a str,
    pub error: Option<&'a str>,
}

/// `./` at the top, one `../` per level below it.
pub fn root_for(path: &str) -> String {
    let depth = path.trim_start_matches('/').matches('/').count();
    if depth == 0 { "./".to_owned() } else { "../".repeat(depth) }
}

pub async fn general(State(state): State<AppState>, uri: Uri) -> Response {
    room_page(&state, &RoomName::general(), &root_for(uri.path()), StatusCode::OK, Draft::default()).await
}

pub async fn room(State(state): State<AppState>, Path(room): Path<String>, uri: Uri) -> Response {
    let root = root_for(uri.path());
    match RoomName::parse(&room) {
        Ok(room) => room_page(&state, &room, &root, StatusCode::OK, Draft::default()).await,
        Err(e) => error_page(StatusCode::NOT_FOUND, &format!("There is no room here. {}", e.problem), &root),
    }
}

/// `GET /go?room=NAME`: the room switcher's form (works without JavaScript). Any valid
/// name is a room: it exists once someone posts to it.
pub async fn go(uri: Uri) -> Response {
    let root = root_for(uri.path());
    let wanted = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "room").map(|(_, v)| v))
        .unwrap_or_default();
    match RoomName::parse(wanted.trim()) {
        Ok(room) => {
            let location = format!("{root}rooms/{room}");
            (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, location)]).into_response()
        }
        Err(e) => error_page(StatusCode::NOT_FOUND, &format!("There is no room here. {}", e.problem), &root),
    }
}

/// The room with its recent history, and the form (with `draft` when a post was refused).
pub async fn room_page(
    state: &AppState,
    room: &RoomName,
    root: &str,
    status: StatusCode,
    draft: Draft<'_>,
) -> Response {
    let store = &state.store;
    let (page, rooms) = match tokio::try_join!(
        store.read(room, Range::Latest, state.config.page_messages),
        store.rooms(ROOM_LINKS)
    ) {
        Ok(found) => found,
        Err(e) => {
            let e = AppError::from(e);
            return error_page(e.status(), &e.public_message(), root);
        }
    };
    let html = RoomPage {
        root,
        room: room.as_str(),
        messages: page.messages.iter().map(MessageView::from).collect(),
        rooms: rooms
            .into_iter()
            .map(|r| RoomLink { name: r.name.to_string(), messages: r.messages })
            .collect(),
        last_id: page.last_id,
        author: draft.author,
        text: draft.text,
        error: draft.error,
    };
    render(status, &html)
}

pub fn error_page(status: StatusCode, message: &str, root: &str) -> Response {
    render(status, &ErrorPage { root, status, message })
}

fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::root_for;

    #[test]
    fn roots() {
        assert_eq!(root_for("/"), "./");
        assert_eq!(root_for("/send"), "./");
        assert_eq!(root_for("/rooms/x"), "../");
        assert_eq!(root_for("/a/b/c"), "../../");
    }
}
