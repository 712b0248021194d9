//! `/send` bodies, as a form and as JSON: decoding never panics, and whatever decodes
//! validates (or is refused) cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssechat::domain::NewMessage;
use ssechat::routes::send::{decode_form, decode_json};

fuzz_target!(|data: &[u8]| {
    for fields in [decode_form(data), decode_json(data, "room, author and text")].into_iter().flatten() {
        let _ = NewMessage::parse(
            fields.room.as_deref().unwrap_or("general"),
            fields.author.as_deref(),
            fields.text.as_deref(),
        );
    }
});
