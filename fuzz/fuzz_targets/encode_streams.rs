//! Any text that validates is framed safely in all three stream formats: one SSE event whose
//! data round-trips, one NDJSON line, and plain text whose continuation lines are indented.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssechat::domain::{Author, Message, NewMessage, RoomName, Timestamp};
use ssechat::wire::{Event, encode_ndjson_line, encode_plain_line, encode_sse_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let (author, text) = input.split_once('\u{0}').unwrap_or(("fuzz", input));
    let Ok(new) = NewMessage::parse("general", Some(author), Some(text)) else { return };
    let _ = (RoomName::parse(input), Author::parse(input));
    let message = Message::new(1, new, Timestamp::from_millis(0).unwrap());
    let event = Event::Message(message.clone());

    let sse = String::from_utf8(encode_sse_frame(&event).to_vec()).unwrap();
    let lines: Vec<&str> = sse.split(['\n', '\r']).collect();
    assert_eq!(lines.len(), 5, "{sse:?}");
    let back: Message = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(back, message);

    let ndjson = String::from_utf8(encode_ndjson_line(&event).to_vec()).unwrap();
    assert_eq!(ndjson.matches(['\n', '\r']).count(), 1);

    let plain = String::from_utf8(encode_plain_line(&event).to_vec()).unwrap();
    let prefix = format!("[00:00:00] {}: ", message.author.as_str());
    for (i, line) in plain.trim_end_matches('\n').split('\n').enumerate() {
        assert!(if i == 0 { line.starts_with(&prefix) } else { line.starts_with("           ") }, "{plain:?}");
    }
});
