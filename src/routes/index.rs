//! `GET /` and `GET /rooms/{room}`: the server-rendered room page, and the error page.
//!
//! Every URL in a page is relative to `root` (`./`, `../`, ...), worked out from the
//! request path, so the app works unchanged under any path prefix behind a proxy.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use super::Viewer;
use crate::domain::PresenceView;
use crate::domain::{Author, IdempotencyKey, Message, RoomName};
use crate::error::AppError;
use crate::policy::watch::Need;
use crate::state::AppState;
use crate::store::Range;
use crate::takeback::Controls;

#[derive(Template)]
#[template(path = "room.html")]
struct RoomPage<'a> {
    root: &'a str,
    room: &'a str,
    messages: Vec<MessageView<'a>>,
    /// Active rooms, for switching.
    rooms: Vec<RoomLink>,
    /// Who is in the room as the page is made (the script keeps it live).
    here: PresenceView,
    /// Where the page's EventSource starts, so there is no gap and no duplicate.
    last_id: u64,
    /// For the script, to offer the same controls on live messages: the reader's user name
    /// (signed in), whether they may delete anyone's messages here, and the edit window.
    viewer: &'a str,
    moderates: bool,
    edit_window: u64,
    author: &'a str,
    /// The signed-in user: the page says so and asks no name.
    user: Option<&'a str>,
    /// Where sign-in comes back to: this page.
    here_path: String,
    text: &'a str,
    error: Option<&'a str>,
    /// Names the message the form sends, made for each render (or kept from the refused
    /// post), so a browser that sends the same form twice stores one message.
    client_id: String,
    /// Why this viewer may read but not post here: the composer is hidden and this shown.
    read_only: Option<String>,
    /// Slow mode's interval, as said on the page.
    slow: Option<String>,
}

struct MessageView<'a> {
    id: u64,
    author: &'a str,
    /// Sent by a signed-in user (a guest's name is unverified).
    user: bool,
    /// The text, with its web links marked.
    parts: Vec<TextPart<'a>>,
    time: String,
    clock: String,
    /// When it was last edited, if it was.
    edited: Option<String>,
    /// What the reader may do to it: only these controls are shown.
    controls: Controls,
}

impl<'a> MessageView<'a> {
    fn new(m: &'a Message, controls: Controls) -> Self {
        Self {
            id: m.id,
            author: m.author.as_str(),
            user: m.user,
            parts: linkify(m.text.as_str()),
            time: m.time.rfc3339(),
            // Without the script the page shows UTC, and says so; the script shows local time.
            clock: format!("{} UTC", m.time.clock()),
            edited: m.edited.map(|t| t.rfc3339()),
            controls,
        }
    }
}

/// A run of message text; `href` is set for an http(s) link (the text is the link itself).
struct TextPart<'a> {
    text: &'a str,
    href: Option<&'a str>,
}

/// Splits text into plain runs and http(s) links. Only those two schemes become links, and
/// trailing punctuation stays text, as in `see https://example.com/a.`.
fn linkify(text: &str) -> Vec<TextPart<'_>> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = ["http://", "https://"].iter().filter_map(|s| rest.find(s)).min() {
        let tail = &rest[start..];
        let end = tail.find(|c: char| c.is_whitespace() || "<>\"'`".contains(c)).unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(|c: char| ".,;:!?)]}".contains(c));
        let scheme_only = url == "http://" || url == "https://";
        if start > 0 {
            parts.push(TextPart { text: &rest[..start], href: None });
        }
        if scheme_only {
            parts.push(TextPart { text: url, href: None });
        } else {
            parts.push(TextPart { text: url, href: Some(url) });
        }
        rest = &tail[url.len()..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(TextPart { text: rest, href: None });
    }
    parts
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
    /// A link to the sign-in page, coming back to where the visitor was.
    login: Option<String>,
}

/// What a form post left behind when it was refused: shown again with the reason.
#[derive(Default)]
pub struct Draft<'a> {
    pub author: &'a str,
    /// The signed-in user's name, if any: the form then asks for no name.
    pub user: Option<&'a str>,
    pub text: &'a str,
    pub error: Option<&'a str>,
    /// The refused post's key, valid, to send again; `None`: a new one.
    pub client_id: Option<&'a str>,
}

/// `./` at the top, one `../` per level below it.
pub fn root_for(path: &str) -> String {
    let depth = path.trim_start_matches('/').matches('/').count();
    if depth == 0 { "./".to_owned() } else { "../".repeat(depth) }
}

pub async fn general(State(state): State<AppState>, viewer: Viewer, uri: Uri) -> Response {
    readable_page(&state, &viewer, &RoomName::general(), &uri).await
}

pub async fn room(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(room): Path<String>,
    uri: Uri,
) -> Response {
    let root = root_for(uri.path());
    match RoomName::parse(&room) {
        Ok(room) => readable_page(&state, &viewer, &room, &uri).await,
        Err(e) => error_page(StatusCode::NOT_FOUND, &format!("There is no room here. {}", e.problem), &root),
    }
}

/// The room page, or the refusal page for a viewer who may not read the room.
async fn readable_page(state: &AppState, viewer: &Viewer, room: &RoomName, uri: &Uri) -> Response {
    let root = root_for(uri.path());
    match viewer.admit(state, room, Need::Read).await {
        Ok(_) => {
            let draft = Draft { user: viewer.who.user().map(Author::as_str), ..Draft::default() };
            room_page(state, viewer, room, &root, StatusCode::OK, draft).await
        }
        Err(refused) => refusal_page(&refused, &root, uri.path()),
    }
}

/// `GET /go?room=NAME`: the room switcher's form (works without JavaScript). Any valid
/// name is a room: it exists once someone posts to it.
pub async fn go(uri: Uri) -> Response {
    let root = root_for(uri.path());
    let params = super::Params::from_uri(&uri).ok();
    let wanted = params.as_ref().and_then(|p| p.get("room")).unwrap_or_default();
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
    viewer: &Viewer,
    room: &RoomName,
    root: &str,
    status: StatusCode,
    draft: Draft<'_>,
) -> Response {
    let store = &state.store;
    let found = tokio::try_join!(
        state.access(&viewer.who, room),
        async { Ok::<_, AppError>(store.read(room, Range::Latest, state.config.page_messages).await?) },
        async {
            state
                .readable(&viewer.who, viewer.client, store.rooms(crate::room_counts::ROOM_LINKS).await?)
                .await
        },
        async { Ok(store.presence(room, state.presence.local(room)).await?) },
        async { Ok(state.policy.directory().await?) },
    );
    let (access, page, rooms, here, dir) = match found {
        Ok(found) => found,
        Err(e) => return error_page(e.status(), &e.public_message(), root),
    };
    let read_only = viewer.admit(state, room, Need::Write).await.err().map(|e| e.public_message());
    let who = &viewer.who;
    let window = state.config.edit_window;
    let last_id = page.last_id;
    let messages = page.current();
    let html = RoomPage {
        root,
        room: room.as_str(),
        messages: messages
            .iter()
            .map(|m| MessageView::new(m, Controls::for_message(who, access, m, window)))
            .collect(),
        rooms: rooms
            .into_iter()
            .map(|r| RoomLink { name: r.name.to_string(), messages: r.messages })
            .collect(),
        here,
        last_id,
        viewer: who.user().map_or("", |name| name.as_str()),
        moderates: access.moderate || who.is_admin(),
        edit_window: window.as_secs(),
        author: draft.author,
        user: draft.user,
        here_path: if *room == RoomName::general() { "/".to_owned() } else { format!("/rooms/{room}") },
        text: draft.text,
        error: draft.error,
        client_id: draft
            .client_id
            .map_or_else(|| IdempotencyKey::random().as_str().to_owned(), str::to_owned),
        read_only,
        slow: dir.settings(room).slow.map(|every| humantime::format_duration(every).to_string()),
    };
    let mut page = render(status, &html);
    // Each render names a new message: no cache may hand one page (and key) to two people.
    page.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    page
}

pub fn error_page(status: StatusCode, message: &str, root: &str) -> Response {
    render(status, &ErrorPage { root, status, message, login: None })
}

/// A refusal for a browser: the error page, which for a `401` links to the sign-in page
/// with `next` (the local path to come back to).
pub fn refusal_page(refused: &AppError, root: &str, next: &str) -> Response {
    let login = matches!(refused, AppError::Unauthorized(_)).then(|| {
        let next = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
        format!("{root}login?next={next}")
    });
    let status = refused.status();
    let mut page = render(status, &ErrorPage { root, status, message: &refused.public_message(), login });
    refused.add_headers(&mut page);
    page
}

pub fn render(status: StatusCode, template: &impl Template) -> Response {
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
    fn links_are_http_and_https_only() {
        let parts = super::linkify(
            "see https://example.com/a?b=1. and http://x.org, not javascript:alert(1) or ftp://f",
        );
        let links: Vec<&str> = parts.iter().filter_map(|p| p.href).collect();
        assert_eq!(links, ["https://example.com/a?b=1", "http://x.org"]);
        let text: String = parts.iter().map(|p| p.text).collect();
        assert_eq!(
            text,
            "see https://example.com/a?b=1. and http://x.org, not javascript:alert(1) or ftp://f"
        );
        assert!(super::linkify("just https:// alone").iter().all(|p| p.href.is_none()));
        assert_eq!(super::linkify("").len(), 1);
    }

    #[test]
    fn roots() {
        assert_eq!(root_for("/"), "./");
        assert_eq!(root_for("/send"), "./");
        assert_eq!(root_for("/rooms/x"), "../");
        assert_eq!(root_for("/a/b/c"), "../../");
    }
}
