//! `Author::parse` and `MessageText::parse` on any string: they never panic, and whatever
//! they accept is NFC, has a visible character, holds none of the characters they refuse,
//! stacks no more marks than allowed, and parses again to itself (stores read values back
//! through `parse`).
#![no_main]

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{
    BinaryProperty, DefaultIgnorableCodePoint, EnumeratedProperty, GeneralCategory, GeneralCategoryGroup,
};
use libfuzzer_sys::fuzz_target;
use ssechat::domain::{Author, MessageText};

/// Pieces a random byte string seldom spells: every kind of character the rules look at.
const PIECES: &[&str] = &[
    "a",
    "n",
    "\u{430}",
    "\u{3b1}",
    "山",
    "た",
    "한",
    "ש",
    "م",
    "1",
    "-",
    " ",
    "\u{a0}",
    "\n",
    "\r\n",
    "\t",
    "\u{301}",
    "\u{363}",
    "\u{20DD}",
    "\u{93F}",
    "\u{1031}",
    "\u{200B}",
    "\u{200C}",
    "\u{200D}",
    "\u{200F}",
    "\u{202E}",
    "\u{2066}",
    "\u{2069}",
    "\u{2028}",
    "\u{3164}",
    "\u{115F}",
    "\u{FFA0}",
    "\u{2800}",
    "\u{FE0F}",
    "\u{E0061}",
    "\u{AD}",
    "\u{FEFF}",
    "👨",
    "🇫",
    "\u{1b}",
    "\u{85}",
    "\u{E000}",
    "\u{378}",
];

fuzz_target!(|data: &[u8]| {
    // Half the inputs are taken as text, half as a string of the pieces above.
    let s = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            rest.iter().map(|&b| PIECES[usize::from(b) % PIECES.len()]).collect()
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    // What a store reads back never panics either.
    let _ = (Author::read_back(&s), MessageText::read_back(&s));
    if let Ok(author) = Author::parse(&s) {
        let name = author.as_str();
        check_common(name, Author::MAX_STACKED_MARKS);
        for c in name.chars() {
            let gc = GeneralCategory::for_char(c);
            let refused = c.is_control()
                || matches!(
                    gc,
                    GeneralCategory::Format
                        | GeneralCategory::LineSeparator
                        | GeneralCategory::ParagraphSeparator
                )
                || DefaultIgnorableCodePoint::for_char(c);
            assert!(!refused, "author {name:?} has U+{:04X}", c as u32);
        }
        assert_eq!(Author::parse(name).as_ref(), Ok(&author));
    }
    if let Ok(text) = MessageText::parse(&s) {
        let body = text.as_str();
        check_common(body, MessageText::MAX_STACKED_MARKS);
        for c in body.chars() {
            let refused = (c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            assert!(!refused, "text {body:?} has U+{:04X}", c as u32);
        }
        assert_eq!(MessageText::parse(body).as_ref(), Ok(&text));
    }
});

/// NFC, at least one visible character, no longer run of non-spacing marks than `max_marks`.
fn check_common(s: &str, max_marks: usize) {
    assert!(ComposingNormalizerBorrowed::new_nfc().is_normalized(s), "{s:?} is not NFC");
    let visible = GeneralCategoryGroup::Letter
        .union(GeneralCategoryGroup::Number)
        .union(GeneralCategoryGroup::Punctuation)
        .union(GeneralCategoryGroup::Symbol);
    let shows =
        |c: char| visible.contains(GeneralCategory::for_char(c)) && !DefaultIgnorableCodePoint::for_char(c);
    assert!(s.chars().any(shows), "{s:?} has nothing visible");
    let marks = GeneralCategoryGroup::NonspacingMark.union(GeneralCategoryGroup::EnclosingMark);
    let mut run = 0;
    for c in s.chars() {
        let gc = GeneralCategory::for_char(c);
        if marks.contains(gc) {
            run += 1;
            assert!(run <= max_marks, "{s:?} stacks more than {max_marks} marks");
        } else if !DefaultIgnorableCodePoint::for_char(c) {
            run = 0;
        }
    }
}
