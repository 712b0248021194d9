//! What a stream carries and how it looks on the wire, in each of the three formats.
//!
//! A [`Frame`] is encoded once and shared by every subscriber: the SSE bytes are built when
//! the frame is made (most readers are browsers), the other formats on first use.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::json;

use crate::domain::PresenceView;
use crate::domain::{Author, Entry, Message, MessageId, RoomName};

/// The stream formats `/events` can speak, chosen by the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/event-stream`: what `EventSource` reads.
    Sse,
    /// `application/x-ndjson`: one JSON object per line.
    Ndjson,
    /// `text/plain`: `[12:01:02] ana: hello`, a terminal chat with curl alone.
    Plain,
}

impl Format {
    pub const MEDIA_TYPES: [(&'static str, Format); 3] = [
        ("text/event-stream", Format::Sse),
        ("application/x-ndjson", Format::Ndjson),
        ("text/plain", Format::Plain),
    ];

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
            Format::Plain => "text/plain; charset=utf-8",
        }
    }

    /// What a stream says first: SSE tells the client how soon to reconnect.
    pub fn preamble(self, retry_ms: u64) -> Option<Bytes> {
        match self {
            Format::Sse => Some(Bytes::from(format!("retry: {retry_ms}\n\n"))),
            Format::Ndjson | Format::Plain => None,
        }
    }
}

/// Something a subscriber is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// Log entry `id` deleted message `target`.
    Delete {
        id: MessageId,
        target: MessageId,
    },
    /// Log entry `id` edited a message: `message` is how it now reads, `edited` set.
    Edit {
        id: MessageId,
        message: Message,
    },
    /// History no longer holds what the client asked for: what it gets next starts at
    /// `oldest_id`, so it knows it missed something.
    Reset {
        oldest_id: MessageId,
    },
    /// Keeps idle connections (and the proxies between) from timing out. Only SSE has a
    /// way to say nothing (a comment); the line formats stay quiet.
    Heartbeat,
    /// Who is in the room (streams that asked with `presence=1`).
    Presence(PresenceView),
    /// Someone is typing; expires on the client. Never stored.
    Typing {
        author: Author,
    },
    /// Messages held per room, for the page's room list (streams that asked with
    /// `presence=1`). The same frame goes to every stream: see `room_counts.rs`.
    Rooms(Vec<RoomCount>),
    /// The reader may no longer read the room (a rule changed, or a ban): the stream ends
    /// after this, and the client should not reconnect.
    Revoked {
        reason: String,
    },
    /// Internal: the server is shutting down; end within this window, at a random moment.
    Drain(std::time::Duration),
    /// Internal: the store may hold messages this node never published (its link to a
    /// shared store was down), so every stream catches up from history. Never sent.
    Resync,
    /// Internal: the access rules (or the users) changed, so every stream looks whether its
    /// reader may still read its room. Never sent.
    Recheck,
}

impl Event {
    /// What a stream says about an entry of a room's log.
    pub fn of(entry: Entry) -> Self {
        match entry {
            Entry::Message(m) => Event::Message(m),
            Entry::Delete { id, target, .. } => Event::Delete { id, target },
            Entry::Edit { id, message } => Event::Edit { id, message },
        }
    }
}

/// A room and the messages it holds, as the `rooms` event lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomCount {
    pub name: RoomName,
    pub messages: u64,
}

/// An event with its encodings, built once and shared.
#[derive(Debug)]
pub struct Frame {
    event: Event,
    /// When the frame was made, which for a live message is when it was published.
    pub published: std::time::Instant,
    sse: Bytes,
    ndjson: OnceLock<Bytes>,
    plain: OnceLock<Bytes>,
}

impl Frame {
    pub fn new(event: Event) -> Self {
        let sse = encode_sse_frame(&event);
        Self {
            event,
            published: std::time::Instant::now(),
            sse,
            ndjson: OnceLock::new(),
            plain: OnceLock::new(),
        }
    }

    /// The log entry's id (a message's, a delete's or an edit's), for resume and
    /// de-duplication; `None` for control events.
    pub fn id(&self) -> Option<MessageId> {
        match &self.event {
            Event::Message(m) => Some(m.id),
            Event::Delete { id, .. } | Event::Edit { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    pub fn encoded(&self, format: Format) -> Bytes {
        match format {
            Format::Sse => self.sse.clone(),
            Format::Ndjson => self.ndjson.get_or_init(|| encode_ndjson_line(&self.event)).clone(),
            Format::Plain => self.plain.get_or_init(|| encode_plain_line(&self.event)).clone(),
        }
    }
}

fn message_json(msg: &Message) -> String {
    escaped_json(msg)
}

/// One line of JSON, with `<`, `>` and `&` escaped (as Go's encoder does) so a stream shown
/// or sniffed as HTML can never carry live markup.
fn escaped_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).expect("our events always serialise");
    if !json.contains(['<', '>', '&']) {
        return json;
    }
    // These characters can only occur inside JSON strings, where `\u00XX` means the same.
    let mut escaped = String::with_capacity(json.len() + 32);
    for c in json.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `id:`, `event:`, one `data:` line of JSON, blank line. JSON never contains a raw line
/// break (serde escapes `\n` and `\r`), so no text can break the framing.
pub fn encode_sse_frame(event: &Event) -> Bytes {
    match event {
        Event::Message(m) => {
            Bytes::from(format!("id: {}\nevent: message\ndata: {}\n\n", m.id, message_json(m)))
        }
        Event::Delete { id, target } => {
            Bytes::from(format!("id: {id}\nevent: delete\ndata: {}\n\n", json!({ "id": target })))
        }
        Event::Edit { id, message } => {
            Bytes::from(format!("id: {id}\nevent: edit\ndata: {}\n\n", message_json(message)))
        }
        Event::Reset { oldest_id } => {
            Bytes::from(format!("event: reset\ndata: {}\n\n", json!({ "oldest_id": oldest_id })))
        }
        Event::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
        Event::Presence(view) => Bytes::from(format!(
            "event: presence\ndata: {}\n\n",
            escaped_json(
                &json!({ "names": view.names, "anonymous": view.anonymous, "version": view.version })
            )
        )),
        Event::Typing { author } => {
            Bytes::from(format!("event: typing\ndata: {}\n\n", escaped_json(&json!({ "author": author }))))
        }
        Event::Rooms(rooms) => {
            Bytes::from(format!("event: rooms\ndata: {}\n\n", escaped_json(&json!({ "rooms": rooms }))))
        }
        Event::Revoked { reason } => {
            Bytes::from(format!("event: revoked\ndata: {}\n\n", escaped_json(&json!({ "reason": reason }))))
        }
        Event::Resync | Event::Recheck | Event::Drain(_) => Bytes::new(),
    }
}

/// A message is its JSON object; other events carry an `event` field, and a delete or an
/// edit its own log id as `entry` (what `?since=` resumes from).
pub fn encode_ndjson_line(event: &Event) -> Bytes {
    let mut line = match event {
        Event::Message(m) => message_json(m),
        Event::Delete { id, target } => json!({ "event": "delete", "id": target, "entry": id }).to_string(),
        Event::Edit { id, message } => {
            let mut object = serde_json::to_value(message).expect("a message always serialises");
            object["event"] = json!("edit");
            object["entry"] = json!(id);
            escaped_json(&object)
        }
        Event::Reset { oldest_id } => json!({ "event": "reset", "oldest_id": oldest_id }).to_string(),
        Event::Presence(view) => escaped_json(&json!({
            "event": "presence",
            "names": view.names,
            "anonymous": view.anonymous,
            "version": view.version,
        })),
        Event::Typing { author } => escaped_json(&json!({ "event": "typing", "author": author })),
        Event::Rooms(rooms) => escaped_json(&json!({ "event": "rooms", "rooms": rooms })),
        Event::Revoked { reason } => escaped_json(&json!({ "event": "revoked", "reason": reason })),
        Event::Heartbeat | Event::Resync | Event::Recheck | Event::Drain(_) => return Bytes::new(),
    };
    line.push('\n');
    Bytes::from(line)
}

/// `[12:01:02] ana: hello`; an edit is the message again, marked `(edited)`. Continuation
/// lines are indented so that a message can never pass itself off as another line from
/// someone else.
pub fn encode_plain_line(event: &Event) -> Bytes {
    match event {
        Event::Message(m) => plain_message(m, ""),
        Event::Edit { message, .. } => plain_message(message, " (edited)"),
        Event::Delete { target, .. } => Bytes::from(format!("-- message #{target} was deleted --\n")),
        Event::Reset { oldest_id } => {
            Bytes::from(format!("-- some messages are no longer held; continuing from #{oldest_id} --\n"))
        }
        Event::Presence(view) => Bytes::from(format!("-- here: {} --\n", view.describe())),
        Event::Typing { author } => Bytes::from(format!("-- {author} is typing --\n")),
        Event::Rooms(rooms) => {
            let rooms: Vec<String> = rooms.iter().map(|r| format!("#{} {}", r.name, r.messages)).collect();
            Bytes::from(format!("-- rooms: {} --\n", rooms.join(", ")))
        }
        Event::Revoked { reason } => {
            Bytes::from(format!("-- access revoked: {} --\n", reason.replace('\n', " ")))
        }
        Event::Heartbeat | Event::Resync | Event::Recheck | Event::Drain(_) => Bytes::new(),
    }
}

fn plain_message(m: &Message, mark: &str) -> Bytes {
    let prefix = format!("[{}] ", m.time.clock());
    let indent = " ".repeat(prefix.len());
    let mut out = format!("{prefix}{}{mark}: ", m.author.as_str());
    for (i, line) in m.text.as_str().split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(&indent);
        }
        out.push_str(line);
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewMessage, Timestamp};

    fn msg(text: &str) -> Message {
        let new = NewMessage::parse("general", Some("ana"), Some(text)).unwrap();
        Message::new(3, new, Timestamp::from_millis(1_764_072_062_345).unwrap())
    }

    #[test]
    fn sse_frame_is_one_event_whatever_the_text() {
        let frame = encode_sse_frame(&Event::Message(msg("a\nid: 9\n\ndata: x\revent: reset")));
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.ends_with("\n\n"));
        let lines: Vec<&str> = text.trim_end().split('\n').collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "id: 3");
        assert_eq!(lines[1], "event: message");
        let data: Message = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data.text.as_str(), "a\nid: 9\n\ndata: x\nevent: reset");
    }

    #[test]
    fn room_counts_read_the_same_in_every_format() {
        let rooms = Event::Rooms(vec![RoomCount { name: RoomName::parse("dev").unwrap(), messages: 12 }]);
        let frame = Frame::new(rooms);
        let data = r#"{"rooms":[{"messages":12,"name":"dev"}]}"#;
        assert_eq!(frame.encoded(Format::Sse), format!("event: rooms\ndata: {data}\n\n"));
        assert_eq!(
            frame.encoded(Format::Ndjson),
            "{\"event\":\"rooms\",\"rooms\":[{\"messages\":12,\"name\":\"dev\"}]}\n"
        );
        assert_eq!(frame.encoded(Format::Plain), "-- rooms: #dev 12 --\n");
    }

    #[test]
    fn markup_is_escaped_in_json_but_round_trips() {
        let frame = encode_sse_frame(&Event::Message(msg("<script>alert(1)</script> & co")));
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'), "{text}");
        let data: Message =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data.text.as_str(), "<script>alert(1)</script> & co");
    }

    #[test]
    fn plain_lines_indent_continuations() {
        let line = encode_plain_line(&Event::Message(msg("hello\n[12:00:00] bob: fake")));
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "[12:01:02] ana: hello\n           [12:00:00] bob: fake\n"
        );
    }

    #[test]
    fn revoked_says_why_in_every_format() {
        let event = Event::Revoked { reason: "no <access>\nhere".to_owned() };
        let sse = encode_sse_frame(&event);
        assert_eq!(&sse[..], b"event: revoked\ndata: {\"reason\":\"no \\u003caccess\\u003e\\nhere\"}\n\n");
        let line = encode_ndjson_line(&event);
        assert_eq!(&line[..], b"{\"event\":\"revoked\",\"reason\":\"no \\u003caccess\\u003e\\nhere\"}\n");
        assert_eq!(&encode_plain_line(&event)[..], b"-- access revoked: no <access> here --\n");
    }

    #[test]
    fn ndjson_is_one_line() {
        let line = encode_ndjson_line(&Event::Message(msg("a\nb")));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let reset = encode_ndjson_line(&Event::Reset { oldest_id: 5 });
        assert_eq!(&reset[..], b"{\"event\":\"reset\",\"oldest_id\":5}\n");
    }

    fn edited(text: &str) -> Message {
        Message { edited: Some(Timestamp::from_millis(1_764_072_099_000).unwrap()), ..msg(text) }
    }

    #[test]
    fn deletes_and_edits_carry_their_own_ids_in_every_format() {
        let delete = Frame::new(Event::Delete { id: 9, target: 3 });
        assert_eq!(&delete.encoded(Format::Sse)[..], b"id: 9\nevent: delete\ndata: {\"id\":3}\n\n");
        assert_eq!(&delete.encoded(Format::Ndjson)[..], b"{\"entry\":9,\"event\":\"delete\",\"id\":3}\n");
        assert_eq!(&delete.encoded(Format::Plain)[..], b"-- message #3 was deleted --\n");
        assert_eq!(delete.id(), Some(9));
        let edit = Frame::new(Event::Edit { id: 10, message: edited("new <b>\nline") });
        let sse = std::str::from_utf8(&edit.encoded(Format::Sse)).unwrap().to_owned();
        let lines: Vec<&str> = sse.trim_end().split('\n').collect();
        assert_eq!(lines[..2], ["id: 10", "event: edit"]);
        let data: Message = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data, edited("new <b>\nline"));
        assert!(lines[2].contains(r#""edited":"2025-11-25T12:01:39.000Z""#), "{sse}");
        let ndjson = edit.encoded(Format::Ndjson);
        assert!(!ndjson.contains(&b'<'));
        let object: serde_json::Value = serde_json::from_slice(&ndjson).unwrap();
        assert_eq!(
            (object["event"].as_str(), object["entry"].as_u64(), object["id"].as_u64()),
            (Some("edit"), Some(10), Some(3))
        );
        assert_eq!(object["text"], "new <b>\nline");
        assert_eq!(
            std::str::from_utf8(&edit.encoded(Format::Plain)).unwrap(),
            "[12:01:02] ana (edited): new <b>\n           line\n"
        );
    }

    mod properties {
        use super::*;
        use crate::domain::MessageText;
        use proptest::prelude::*;

        /// Text as people (and attackers) type it: any characters, framing look-alikes,
        /// line breaks of every kind. Only what `MessageText` accepts is kept.
        fn texts() -> impl Strategy<Value = MessageText> {
            let piece = prop_oneof![
                any::<char>().prop_map(String::from),
                Just("\n".to_owned()),
                Just("\r\n".to_owned()),
                Just("\r".to_owned()),
                Just("data: ".to_owned()),
                Just("id: 9".to_owned()),
                Just("event: reset".to_owned()),
                Just(": comment".to_owned()),
                Just("<script>".to_owned()),
                Just("\u{2028}".to_owned()),
            ];
            prop::collection::vec(piece, 1..40)
                .prop_filter_map("not a valid message text", |parts| MessageText::parse(&parts.concat()).ok())
        }

        fn message(text: MessageText) -> Message {
            let new = NewMessage { text, ..NewMessage::parse("general", Some("ana"), Some("x")).unwrap() };
            Message::new(7, new, Timestamp::from_millis(1_764_072_062_345).unwrap())
        }

        proptest! {
            #[test]
            fn sse_is_one_event_that_round_trips(text in texts()) {
                let m = message(text);
                let frame = encode_sse_frame(&Event::Message(m.clone()));
                let frame = std::str::from_utf8(&frame).unwrap();
                // What an SSE parser sees: lines end at \n, \r\n or \r; a blank line ends the event.
                let lines: Vec<&str> = frame.split(['\n', '\r']).collect();
                prop_assert_eq!(lines.len(), 5, "{:?}", frame);
                prop_assert_eq!(lines[0], "id: 7");
                prop_assert_eq!(lines[1], "event: message");
                prop_assert_eq!(lines[3], "");
                let data: Message = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
                prop_assert_eq!(data, m);
            }

            #[test]
            fn an_edit_is_one_sse_event_and_one_ndjson_line_that_round_trip(text in texts()) {
                let m = Message { edited: Some(Timestamp::from_millis(1_764_072_099_000).unwrap()), ..message(text) };
                let frame = Frame::new(Event::Edit { id: 9, message: m.clone() });
                let sse = frame.encoded(Format::Sse);
                let lines: Vec<&str> = std::str::from_utf8(&sse).unwrap().split(['\n', '\r']).collect();
                prop_assert_eq!(&lines[..2], &["id: 9", "event: edit"]);
                prop_assert_eq!(lines.len(), 5);
                let data: Message = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
                prop_assert_eq!(&data, &m);
                let line = frame.encoded(Format::Ndjson);
                let line = std::str::from_utf8(&line).unwrap();
                prop_assert!(!line[..line.len() - 1].contains(['\n', '\r']));
                let back: Message = serde_json::from_str(line).unwrap();
                prop_assert_eq!(back, m);
            }

            #[test]
            fn ndjson_is_one_line_that_round_trips(text in texts()) {
                let m = message(text);
                let line = encode_ndjson_line(&Event::Message(m.clone()));
                let line = std::str::from_utf8(&line).unwrap();
                prop_assert!(line.ends_with('\n'));
                prop_assert!(!line[..line.len() - 1].contains(['\n', '\r']));
                let back: Message = serde_json::from_str(line).unwrap();
                prop_assert_eq!(back, m);
            }

            #[test]
            fn plain_text_keeps_every_line_and_marks_continuations(text in texts()) {
                let m = message(text);
                let out = encode_plain_line(&Event::Message(m.clone()));
                let out = std::str::from_utf8(&out).unwrap();
                prop_assert!(out.ends_with('\n'));
                let lines: Vec<&str> = out[..out.len() - 1].split('\n').collect();
                let first = lines[0].strip_prefix("[12:01:02] ana: ").unwrap();
                let mut rebuilt = vec![first.to_owned()];
                for line in &lines[1..] {
                    // A continuation never looks like the start of another message.
                    let rest = line.strip_prefix(&" ".repeat(11)).unwrap();
                    rebuilt.push(rest.to_owned());
                }
                prop_assert_eq!(rebuilt.join("\n"), m.text.as_str());
            }
        }
    }
}
