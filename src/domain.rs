//! Domain types. Every value that comes from outside is parsed here exactly once;
//! after `parse` succeeds the rest of the code never checks it again.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize, Serializer};

mod account;
mod entry;
mod unicode;

pub use account::{Session, Token, User, skeleton};
pub use entry::{Change, Entry, TakeBack, current_message, current_state};

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

/// Who wrote a message, as others will see it: one name can't pass for another.
///
/// Trimmed and in NFC, 1 to 40 characters, at least one of them visible; no control,
/// invisible, line-breaking or direction-changing characters; at most 4 combining marks on
/// one character; each word in one writing system (the rules are in `domain/unicode.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Author(String);

impl Author {
    pub const MAX_CHARS: usize = 40;
    /// Names need fewer: after NFC most scripts use 0 to 2 per letter, Tibetan stacks and
    /// pointed Hebrew up to 3. More only serves to draw over the lines around the name.
    pub const MAX_STACKED_MARKS: usize = 4;
    const FIELD: &str = "author";

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let author = Self::parse_loosely(s)?;
        let s = author.as_str();
        unicode::refuse_chars(
            Self::FIELD,
            s,
            unicode::is_invisible,
            "invisible, line-breaking or direction-changing characters",
        )?;
        unicode::limit_stacked_marks(Self::FIELD, s, Self::MAX_STACKED_MARKS)?;
        unicode::require_visible(Self::FIELD, s)?;
        unicode::require_single_script_words(Self::FIELD, s)?;
        Ok(author)
    }

    /// A name read back from a store, where an earlier version may have written it under
    /// looser rules: rather than make the room's history unreadable, it is taken with the
    /// rules of then, each invisible or direction-changing character shown as U+FFFD.
    pub fn read_back(s: &str) -> Result<Self, FieldError> {
        Self::parse(s)
            .or_else(|_| Self::parse_loosely(&unicode::show_as_replacement(s, unicode::is_invisible)))
    }

    /// The rules before Unicode was looked at: trimmed, 1 to 40 characters, no controls.
    fn parse_loosely(s: &str) -> Result<Self, FieldError> {
        let s = unicode::nfc(s.trim());
        if s.is_empty() {
            return Err(FieldError::new(Self::FIELD, "is required"));
        }
        check_length(Self::FIELD, &s, Self::MAX_CHARS)?;
        unicode::refuse_chars(Self::FIELD, &s, char::is_control, "control characters")?;
        Ok(Self(s.into_owned()))
    }
}

/// The body of a message: 1 to 4,000 characters, at least one of them visible.
///
/// Line breaks are normalised to `\n` (browsers send `\r\n`), trailing whitespace is
/// dropped and the text is put in NFC. Newline and tab are the only control characters
/// allowed, so nothing a reader sees (page, SSE, plain-text terminal) can be steered by
/// escape sequences, and bidi embeddings, overrides and isolates are refused so no text can
/// reorder what is drawn after it. Everything else a language or an emoji needs stays:
/// right-to-left scripts, joiners inside emoji sequences, variation selectors, tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageText(String);

impl MessageText {
    pub const MAX_CHARS: usize = 4000;
    /// More room than a name, for scripture and phonetics (cantillated Hebrew, IPA with
    /// several diacritics). Beyond that marks only draw over the messages around.
    pub const MAX_STACKED_MARKS: usize = 8;
    const FIELD: &str = "text";

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let text = Self::parse_loosely(s)?;
        let s = text.as_str();
        unicode::refuse_chars(
            Self::FIELD,
            s,
            unicode::turns_direction,
            "bidi embeddings, overrides or isolates (U+202A to U+202E, U+2066 to U+2069)",
        )?;
        unicode::limit_stacked_marks(Self::FIELD, s, Self::MAX_STACKED_MARKS)?;
        unicode::require_visible(Self::FIELD, s)?;
        Ok(text)
    }

    /// A text read back from a store, where an earlier version may have written it under
    /// looser rules: taken with the rules of then, each bidi control shown as U+FFFD.
    pub fn read_back(s: &str) -> Result<Self, FieldError> {
        Self::parse(s)
            .or_else(|_| Self::parse_loosely(&unicode::show_as_replacement(s, unicode::turns_direction)))
    }

    /// The rules before Unicode was looked at: line breaks, length, control characters.
    fn parse_loosely(s: &str) -> Result<Self, FieldError> {
        let normalised = s.replace("\r\n", "\n").replace('\r', "\n");
        let text = unicode::nfc(normalised.trim_end());
        if text.trim().is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        check_length(Self::FIELD, &text, Self::MAX_CHARS)?;
        unicode::refuse_chars(
            Self::FIELD,
            &text,
            |c| c.is_control() && c != '\n' && c != '\t',
            "control characters other than newline and tab",
        )?;
        Ok(Self(text.into_owned()))
    }
}

/// At most `max` characters.
fn check_length(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    let chars = s.chars().count();
    if chars > max {
        return Err(FieldError::new(field, format!("is {chars} characters long; the limit is {max}")));
    }
    Ok(())
}

/// A message id: positive, strictly increasing per room, never reused.
pub type MessageId = u64;

/// The largest id there can be: 2^53 - 1, the largest integer JavaScript reads exactly. An
/// id above it was never given by any store; a client sending one is refused, whatever the
/// store (SQLite could not even compare it: its integers are signed 64-bit).
pub const MAX_MESSAGE_ID: MessageId = (1 << 53) - 1;

/// Ids a store may give per millisecond of its life, on average, for [`first_id_base`].
pub const IDS_PER_MILLISECOND: MessageId = 1_000;

/// Where a store that forgets (memory; Redis without persistence) starts its ids: after its
/// start time in milliseconds × 1,000. A new life's ids are then above anything an earlier
/// life gave, as long as that life gave under a million ids a second on average (the memory
/// store manages tens of thousands) and the clock did not go back between them; so an id
/// from an earlier life always reads as "not given by this store" and gets `reset`, never a
/// silent skip. Ids stay under 2^53 until the year 2255.
pub fn first_id_base(now: std::time::SystemTime) -> MessageId {
    let ms = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as MessageId;
    ms.saturating_mul(IDS_PER_MILLISECOND).min(MAX_MESSAGE_ID / 2)
}

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

    /// A key the server makes up for a send that came without one, so that every send can be
    /// settled by its key: 128 bits from the operating system's generator, as 32 hex digits.
    /// Unguessable, since a client that learned another's key could answer for its message.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
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
    /// Sent by a signed-in user under their user name (see [`Message::user`]).
    pub user: bool,
}

impl NewMessage {
    /// Validates raw fields in the order a user fixes a form: room, author, text.
    pub fn parse(room: &str, author: Option<&str>, text: Option<&str>) -> Result<Self, FieldError> {
        Ok(Self {
            room: RoomName::parse(room)?,
            author: Author::parse(author.unwrap_or(""))?,
            text: MessageText::parse(text.unwrap_or(""))?,
            key: None,
            user: false,
        })
    }

    pub fn with_key(self, key: Option<IdempotencyKey>) -> Self {
        Self { key, ..self }
    }

    /// Sent by the signed-in user `name`: their name is the author, whatever was typed.
    pub fn signed_by(self, name: &Author) -> Self {
        Self { author: name.clone(), user: true, ..self }
    }
}

/// A stored message, exactly as every client sees it: `{id, room, author, text, time}`,
/// and `edited` once it was edited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub room: RoomName,
    pub author: Author,
    pub text: MessageText,
    pub time: Timestamp,
    /// When the text was last edited (see [`Entry::Edit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<Timestamp>,
    /// The author is a registered user who was signed in when sending (a guest's name is
    /// whatever they typed). Messages stored before accounts existed read as `false`. Only
    /// `"user": true` is written: a guest's message looks as it always did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user: bool,
}

impl Message {
    pub fn new(id: MessageId, new: NewMessage, time: Timestamp) -> Self {
        Self { id, room: new.room, author: new.author, text: new.text, time, edited: None, user: new.user }
    }
}

/// One reader, across reconnects and nodes (`?reader=` on a stream): the page makes one
/// per tab. Only presence uses it, to count a reader once wherever it is connected.
/// 8 to 32 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReaderId(String);

impl ReaderId {
    const FIELD: &str = "reader";

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if !(8..=32).contains(&s.len()) || !s.chars().all(allowed) {
            return Err(FieldError::new(Self::FIELD, "must be 8 to 32 characters of A-Z, a-z, 0-9, _ and -"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who is in a room: the names of named readers, and how many are anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceView {
    /// Sorted, each name once.
    pub names: Vec<String>,
    pub anonymous: u64,
    /// When the view was computed, on the computing node's presence clock (see
    /// `presence.rs`): a stream is only ever told views newer than the last it got. 0 for
    /// one node's part of a view. Streams carry it; the JSON of `/rooms/{room}/presence`
    /// does not.
    #[serde(skip)]
    pub version: u64,
    /// Among the anonymous readers, the ids of those who gave one (`?reader=`, see
    /// [`ReaderId`]), each once; at most [`PresenceView::MAX_READER_IDS`] of them per node.
    /// Merged by union, so a reader who moved to another node while the first was dying is
    /// counted once. Shared between nodes only, never shown.
    #[serde(skip)]
    pub readers: Vec<String>,
}

impl PresenceView {
    /// Reader ids one node lists per room at most; readers past them are only counted.
    pub const MAX_READER_IDS: usize = 200;

    /// Everyone in several views (one per node): names united, anonymous readers with an
    /// id united, the other anonymous readers summed.
    pub fn merge<'a>(views: impl IntoIterator<Item = &'a PresenceView>) -> PresenceView {
        let (mut names, mut readers) = (BTreeSet::new(), BTreeSet::new());
        let (mut without_id, mut version) = (0, 0);
        for view in views {
            names.extend(view.names.iter().cloned());
            readers.extend(view.readers.iter().cloned());
            without_id += view.anonymous.saturating_sub(view.readers.len() as u64);
            version = version.max(view.version);
        }
        PresenceView {
            names: names.into_iter().collect(),
            anonymous: without_id + readers.len() as u64,
            version,
            readers: readers.into_iter().collect(),
        }
    }

    /// The same people, whatever the versions: such a view is not worth telling again.
    pub fn same_people(&self, other: &PresenceView) -> bool {
        self.names == other.names && self.anonymous == other.anonymous
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
    fn server_made_keys_are_valid_keys_and_all_different() {
        let keys: std::collections::HashSet<String> =
            (0..1000).map(|_| IdempotencyKey::random().as_str().to_owned()).collect();
        assert_eq!(keys.len(), 1000);
        for key in keys.iter().take(5) {
            assert_eq!(key.len(), 32, "{key}");
            assert_eq!(IdempotencyKey::parse("key", key).unwrap().as_str(), key);
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

    /// The problem `parse` names for `s`, which must be refused.
    fn author_problem(s: &str) -> String {
        let err = Author::parse(s).expect_err(s);
        assert_eq!(err.field, "author", "{s:?}");
        err.problem
    }

    fn text_problem(s: &str) -> String {
        let err = MessageText::parse(s).expect_err(s);
        assert_eq!(err.field, "text", "{s:?}");
        err.problem
    }

    #[test]
    fn authors_in_many_scripts_pass_unchanged() {
        for ok in [
            "Ana",
            "O'Brien-Smith",
            "R2-D2",
            "ana_77",
            "José Ærøskøbing",
            "Łukasz Żółć",
            "Nguyễn Thị Minh Khai",
            "Zoë",
            "Иван Петров",
            "Ana Петрова",
            "Αλέξης",
            "דוד כהן",
            "שָׁלוֹם",
            "مريم",
            "محمد علي",
            "山田太郎",
            "山田たろう",
            "ヤマダ",
            "김민준",
            "한국語",
            "Иван_2",
            "王小明",
            "ศรีสุดา",
            "देवनागरी",
            "தமிழ்",
            "སྒྲུབ",
            "ana 🙂",
            "🦀",
        ] {
            assert_eq!(Author::parse(ok).map(String::from), Ok(ok.to_owned()), "{ok}");
        }
    }

    #[test]
    fn authors_are_nfc() {
        // `e` + COMBINING ACUTE ACCENT, as macOS keyboards send it, is the same name as `é`.
        assert_eq!(Author::parse(" Jose\u{301} ").unwrap().as_str(), "José");
        assert_eq!(Author::parse("Jose\u{301}").unwrap(), Author::parse("José").unwrap());
        // Length counts the normalised name: 40 decomposed `é` are 40 characters.
        assert!(Author::parse(&"e\u{301}".repeat(40)).is_ok());
    }

    #[test]
    fn authors_refuse_invisible_and_direction_changing_characters() {
        for (bad, found) in [
            ("\u{202E}nimda", "U+202E"),
            ("ana\u{2066}bob\u{2069}", "U+2066"),
            ("\u{2067}ana", "U+2067"),
            ("a\u{200F}na", "U+200F"),
            ("ana\u{200B}", "U+200B"),
            ("a\u{200D}na", "U+200D"),
            ("an\u{AD}a", "U+00AD"),
            ("\u{FEFF}ana", "U+FEFF"),
            ("ana\u{3164}", "U+3164"),
            ("\u{115F}ana", "U+115F"),
            ("ana\u{1160}", "U+1160"),
            ("ana\u{FFA0}", "U+FFA0"),
            ("a\u{34F}na", "U+034F"),
            ("ana\u{E0061}", "U+E0061"),
            ("ana\u{2028}bob", "U+2028"),
            ("ana\u{2029}bob", "U+2029"),
            ("⠀ana", "U+2800"),
            ("ana\u{2764}\u{FE0F}", "U+FE0F"),
        ] {
            let problem = author_problem(bad);
            assert!(problem.contains("invisible") && problem.contains(found), "{bad:?}: {problem}");
        }
        // Names made only of invisible characters are refused for the same reason.
        for bad in ["\u{200B}", "\u{200B}\u{200C}\u{200D}", "\u{3164}", "\u{3164}\u{3164}", "\u{2800}"] {
            assert!(author_problem(bad).contains("invisible"), "{bad:?}");
        }
    }

    #[test]
    fn authors_need_a_visible_character() {
        for bad in ["\u{301}", "\u{301}\u{302}", " \u{20DD} "] {
            assert!(author_problem(bad).contains("at least one visible character"), "{bad:?}");
        }
    }

    #[test]
    fn authors_stack_at_most_four_combining_marks() {
        // NFC composes the first mark into the letter where it can: U+0363 has no
        // precomposed form, so every one of these stays a separate mark.
        let marks = |n| format!("a{}", "\u{363}".repeat(n));
        assert!(Author::parse(&marks(Author::MAX_STACKED_MARKS)).is_ok());
        assert!(author_problem(&marks(5)).contains("more than 4 combining marks"));
        let zalgo = format!("a{}", "\u{301}\u{302}\u{303}".repeat(13));
        assert!(author_problem(&zalgo).contains("found 38 in a row"), "{}", author_problem(&zalgo));
        // Spacing marks take room of their own and are not counted: Burmese ချွေး.
        assert!(Author::parse("ချွေး").is_ok());
    }

    #[test]
    fn authors_keep_one_writing_system_per_word() {
        let problem = author_problem("\u{430}na");
        assert!(problem.contains("mix writing systems"), "{problem}");
        assert!(problem.contains("Cyrillic") && problem.contains("Latin"), "{problem}");
        for bad in ["p\u{430}ypal", "bob \u{430}na", "\u{3b1}lpha", "ana山"] {
            assert!(author_problem(bad).contains("mix writing systems"), "{bad:?}");
        }
        assert_ne!(Author::parse("ana").ok(), Author::parse("\u{430}na").ok());
    }

    #[test]
    fn texts_in_many_scripts_and_emoji_pass_unchanged() {
        for ok in [
            "hello, world",
            "שלום עולם, מה שלומך?",
            "مرحبا بالعالم",
            "English with עברית inside and \u{200F} a mark",
            "你好，世界。こんにちは",
            "Ça va? Tiếng Việt",
            "Здравствуй, мир",
            "👨\u{200D}👩\u{200D}👧 family",
            "🇫🇷🇯🇵",
            "1\u{FE0F}\u{20E3} #\u{FE0F}\u{20E3}",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "\u{2764}\u{FE0F} 👍🏽",
            "ZWNJ in Persian: می\u{200C}خواهم",
            "a\u{2028}b",
        ] {
            assert_eq!(MessageText::parse(ok).map(String::from), Ok(ok.to_owned()), "{ok}");
        }
        assert_eq!(MessageText::parse("cafe\u{301}").unwrap().as_str(), "café");
        assert!(
            MessageText::parse(&format!("a{}", "\u{363}".repeat(MessageText::MAX_STACKED_MARKS))).is_ok()
        );
    }

    #[test]
    fn texts_refuse_direction_controls_and_invisible_only_content() {
        for (bad, found) in [
            ("\u{202E}txt.exe", "U+202E"),
            ("a\u{202A}b", "U+202A"),
            ("a\u{202B}b", "U+202B"),
            ("a\u{202C}b", "U+202C"),
            ("a\u{202D}b", "U+202D"),
            ("a\u{2066}b\u{2069}", "U+2066"),
            ("a\u{2068}b", "U+2068"),
        ] {
            let problem = text_problem(bad);
            assert!(problem.contains("bidi") && problem.contains(found), "{bad:?}: {problem}");
        }
        for bad in [
            "\u{200B}",
            "\u{200D}\u{200D}",
            "\u{3164}",
            "\u{2800} \u{2800}",
            "\u{FE0F}",
            "\u{301}",
            "\u{E0061}",
        ] {
            assert!(text_problem(bad).contains("at least one visible character"), "{bad:?}");
        }
        let zalgo = format!("a{}", "\u{363}".repeat(MessageText::MAX_STACKED_MARKS + 1));
        assert!(text_problem(&zalgo).contains("more than 8 combining marks"));
    }

    #[test]
    fn what_earlier_versions_stored_reads_back_showing_what_it_hid() {
        let author = |s| Author::read_back(s).map(String::from);
        assert_eq!(author("ana"), Ok("ana".to_owned()));
        assert_eq!(author("\u{202E}nimda"), Ok("\u{FFFD}nimda".to_owned()));
        assert_eq!(author("\u{3164}"), Ok("\u{FFFD}".to_owned()));
        assert_eq!(author("\u{430}na"), Ok("\u{430}na".to_owned()));
        assert!(Author::read_back("a\tb").is_err(), "never valid, so a damaged row");
        let text = |s| MessageText::read_back(s).map(String::from);
        assert_eq!(text("👨\u{200D}👩\u{200D}👧"), Ok("👨\u{200D}👩\u{200D}👧".to_owned()));
        assert_eq!(text("see \u{202E}gnp.exe"), Ok("see \u{FFFD}gnp.exe".to_owned()));
        assert!(MessageText::read_back("bell\u{7}").is_err());
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
