//! Domain types. Every value that comes from outside is parsed here exactly once;
//! after `parse` succeeds the rest of the code never checks it again.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize, Serializer};

/// Why a value was refused, and which field it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self { field, problem: problem.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

/// The shared plumbing of a validated string: `as_str`, `Display`, and serde through
/// `parse`, so even data read back from a store is checked.
macro_rules! validated_string {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

validated_string!(RoomName);
validated_string!(Author);
validated_string!(MessageText);

/// A room: 1 to 64 characters of `a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

impl RoomName {
    pub const MAX_LEN: usize = 64;
    pub const RULE: &'static str = "room names are 1 to 64 characters of a-z, 0-9, '-' and '_'";
    pub const DEFAULT: &'static str = "general";

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(ok_char) {
            let shown: String = s.chars().take(80).collect();
            return Err(FieldError::new(
                "room",
                format!("{shown:?} is not a valid room name: {}", Self::RULE),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The room shown at `/`.
    pub fn general() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

/// Who wrote a message: trimmed, 1 to 40 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Author(String);

impl Author {
    pub const MAX_CHARS: usize = 40;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(FieldError::new("author", "is required"));
        }
        let chars = s.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "author",
                format!("is {chars} characters long; the limit is {}", Self::MAX_CHARS),
            ));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(FieldError::new(
                "author",
                format!("must not contain control characters (found U+{:04X})", c as u32),
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// The body of a message: 1 to 4,000 characters, not only whitespace.
///
/// Line breaks are normalised to `\n` (browsers send `\r\n`) and trailing whitespace is
/// dropped. Newline and tab are the only control characters allowed, so nothing a reader
/// sees (page, SSE, plain-text terminal) can be steered by escape sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageText(String);

impl MessageText {
    pub const MAX_CHARS: usize = 4000;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let normalised = s.replace("\r\n", "\n").replace('\r', "\n");
        let text = normalised.trim_end();
        if text.trim().is_empty() {
            return Err(FieldError::new("text", "must not be empty"));
        }
        let chars = text.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "text",
                format!("is {chars} characters long; the limit is {}", Self::MAX_CHARS),
            ));
        }
        if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\n' && c != '\t') {
            return Err(FieldError::new(
                "text",
                format!(
                    "must not contain control characters other than newline and tab (found U+{:04X})",
                    c as u32
                ),
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

/// A message id: positive, strictly increasing per room, never reused.
pub type MessageId = u64;

/// A point in time, kept to the millisecond and written as RFC 3339 (`2026-11-25T12:01:02.345Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_millis(Utc::now().timestamp_millis()).expect("the clock is within chrono's range")
    }

    pub fn from_millis(ms: i64) -> Option<Self> {
        Utc.timestamp_millis_opt(ms).single().map(Self)
    }

    pub fn millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// `12:01:02`, in UTC: the plain-text stream and the page without JavaScript.
    pub fn clock(&self) -> String {
        self.0.format("%H:%M:%S").to_string()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl TryFrom<String> for Timestamp {
    type Error = chrono::ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Ok(Self(DateTime::parse_from_rfc3339(&s)?.with_timezone(&Utc)))
    }
}

/// A client's name for one message it sends (`Idempotency-Key` or `client_id`): a retry
/// with the same key gets the message stored the first time. 1 to 128 visible ASCII
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FieldError::new(field, "must be 1 to 128 visible ASCII characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message that passed validation and waits for the store to give it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub room: RoomName,
    pub author: Author,
    pub text: MessageText,
    /// Set when the client wants a retry to be recognised.
    pub key: Option<IdempotencyKey>,
}

impl NewMessage {
    /// Validates raw fields in the order a user fixes a form: room, author, text.
    pub fn parse(room: &str, author: Option<&str>, text: Option<&str>) -> Result<Self, FieldError> {
        Ok(Self {
            room: RoomName::parse(room)?,
            author: Author::parse(author.unwrap_or(""))?,
            text: MessageText::parse(text.unwrap_or(""))?,
            key: None,
        })
    }

    pub fn with_key(self, key: Option<IdempotencyKey>) -> Self {
        Self { key, ..self }
    }
}

/// A stored message, exactly as every client sees it: `{id, room, author, text, time}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub room: RoomName,
    pub author: Author,
    pub text: MessageText,
    pub time: Timestamp,
}

impl Message {
    pub fn new(id: MessageId, new: NewMessage, time: Timestamp) -> Self {
        Self { id, room: new.room, author: new.author, text: new.text, time }
    }
}

/// Who is in a room: the names of named readers, and how many are anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceView {
    /// Sorted, each name once.
    pub names: Vec<String>,
    pub anonymous: u64,
}

impl PresenceView {
    /// Everyone in several views (one per node): names united, anonymous readers summed.
    pub fn merge<'a>(views: impl IntoIterator<Item = &'a PresenceView>) -> PresenceView {
        let mut names = BTreeSet::new();
        let mut anonymous = 0;
        for view in views {
            names.extend(view.names.iter().cloned());
            anonymous += view.anonymous;
        }
        PresenceView { names: names.into_iter().collect(), anonymous }
    }

    /// `ana, bob and 2 others`, for the plain-text stream.
    pub fn describe(&self) -> String {
        let mut parts = self.names.join(", ");
        if self.anonymous > 0 {
            let others = format!("{} other{}", self.anonymous, if self.anonymous == 1 { "" } else { "s" });
            parts = if parts.is_empty() { others } else { format!("{parts} and {others}") };
        }
        if parts.is_empty() { "nobody".to_owned() } else { parts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        for ok in ["general", "a", "dev-ops_2", &"x".repeat(64)] {
            assert!(RoomName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "General", "a b", "é", "a/b", "../x", &"x".repeat(65)] {
            let err = RoomName::parse(bad).unwrap_err();
            assert_eq!(err.field, "room", "{bad}");
        }
    }

    #[test]
    fn authors() {
        assert_eq!(Author::parse("  ana ").unwrap().as_str(), "ana");
        assert_eq!(Author::parse(&"é".repeat(40)).unwrap().as_str().chars().count(), 40);
        assert!(Author::parse("").is_err());
        assert!(Author::parse("   ").is_err());
        assert!(Author::parse(&"a".repeat(41)).is_err());
        assert!(Author::parse("a\nb").is_err());
        assert!(Author::parse("a\tb").is_err());
        assert!(Author::parse("a\u{1b}[31m").is_err());
    }

    #[test]
    fn texts() {
        assert_eq!(MessageText::parse("a\r\nb\rc  \n").unwrap().as_str(), "a\nb\nc");
        assert_eq!(MessageText::parse("\tcode\n  indented").unwrap().as_str(), "\tcode\n  indented");
        assert_eq!(MessageText::parse(&"é".repeat(4000)).unwrap().as_str().chars().count(), 4000);
        assert!(MessageText::parse(&"a".repeat(4001)).is_err());
        assert!(MessageText::parse("").is_err());
        assert!(MessageText::parse(" \n\t ").is_err());
        assert!(MessageText::parse("bell\u{7}").is_err());
        assert!(MessageText::parse("nul\0").is_err());
        assert!(MessageText::parse("c1\u{85}x").is_err());
        let err = MessageText::parse("").unwrap_err();
        assert_eq!(err.to_string(), "text: must not be empty");
    }

    #[test]
    fn message_json_shape() {
        let new = NewMessage::parse("general", Some("ana"), Some("hi")).unwrap();
        let msg = Message::new(7, new, Timestamp::from_millis(1_764_072_062_345).unwrap());
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"room":"general","author":"ana","text":"hi","time":"2025-11-25T12:01:02.345Z"}"#
        );
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back, msg);
        assert!(serde_json::from_str::<Message>(&json.replace("general", "Bad Room")).is_err());
    }
}
