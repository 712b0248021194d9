//! The Unicode rules behind `Author` and `MessageText`: what is invisible, what turns the
//! direction of text, what stacks, and what mixes writing systems.
//!
//! Character properties come from ICU4X (`icu_properties`, `icu_normalizer`: the Unicode
//! Consortium's own Rust libraries, already built for `url`), so they follow each Unicode
//! version without hand-kept tables. Mixed-script detection is UTS #39's, from
//! `unicode-security` (the crate behind rustc's `mixed_script_confusables` lint).

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{
    BinaryProperty, DefaultIgnorableCodePoint, EnumeratedProperty, GeneralCategory, GeneralCategoryGroup,
};
use unicode_security::mixed_script::AugmentedScriptSet;

use super::FieldError;

/// BRAILLE PATTERN BLANK: a symbol (So) that draws nothing. No Unicode property marks it as
/// invisible, and it is the usual way to fake an empty name once U+3164 is refused.
const BLANK_SYMBOL: char = '\u{2800}';

/// `s` in Normalization Form C, so that `José` typed as `e` + U+0301 and as `é` is one
/// name. ASCII (most messages) is NFC as it is, and each check below takes it the short way.
pub(super) fn nfc(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    ComposingNormalizerBorrowed::new_nfc().normalize(s)
}

/// Draws nothing or changes how its neighbours are drawn: format characters (Cf: zero-width
/// spaces and joiners, bidi controls, tags), line and paragraph separators (Zl, Zp) and every
/// Default_Ignorable_Code_Point (U+3164 HANGUL FILLER, U+115F, U+FFA0, variation selectors...).
pub(super) fn is_invisible(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    let category = GeneralCategory::for_char(c);
    matches!(
        category,
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    ) || DefaultIgnorableCodePoint::for_char(c)
        || c == BLANK_SYMBOL
}

/// The bidi controls that reorder the text after them: embeddings and overrides
/// (U+202A–U+202E) and isolates (U+2066–U+2069). The marks (U+200E, U+200F, U+061C) only
/// nudge neutral characters and are part of ordinary right-to-left writing, so they stay.
pub(super) fn turns_direction(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A letter, digit, punctuation mark or symbol that draws something.
pub(super) fn is_visible(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    let visible = GeneralCategoryGroup::Letter
        .union(GeneralCategoryGroup::Number)
        .union(GeneralCategoryGroup::Punctuation)
        .union(GeneralCategoryGroup::Symbol);
    visible.contains(GeneralCategory::for_char(c)) && !is_invisible(c)
}

/// Refuses the first character of `s` that `refused` matches, naming it.
pub(super) fn refuse_chars(
    field: &'static str,
    s: &str,
    refused: impl Fn(char) -> bool,
    what: &str,
) -> Result<(), FieldError> {
    match s.chars().find(|&c| refused(c)) {
        Some(c) => Err(FieldError::new(field, format!("must not contain {what} (found U+{:04X})", c as u32))),
        None => Ok(()),
    }
}

/// At least one character that draws something.
pub(super) fn require_visible(field: &'static str, s: &str) -> Result<(), FieldError> {
    if s.chars().any(is_visible) {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        "must contain at least one visible character (a letter, digit, punctuation mark or symbol)",
    ))
}

/// At most `max` non-spacing marks (Mn, Me) on one character. Spacing marks (Mc) take room
/// of their own, so only non-spacing ones can pile up over the lines around them; an
/// invisible character between two marks does not start a new run.
pub(super) fn limit_stacked_marks(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    let stacks = GeneralCategoryGroup::NonspacingMark.union(GeneralCategoryGroup::EnclosingMark);
    let (mut run, mut longest) = (0, 0);
    for c in s.chars() {
        if c.is_ascii() {
            run = 0;
        } else if stacks.contains(GeneralCategory::for_char(c)) {
            run += 1;
            longest = longest.max(run);
        } else if !DefaultIgnorableCodePoint::for_char(c) {
            run = 0;
        }
    }
    if longest <= max {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        format!("must not stack more than {max} combining marks on one character (found {longest} in a row)"),
    ))
}

/// Each word (between whitespace) in one writing system, as UTS #39 resolves script sets:
/// digits and punctuation go with any script, Han with kana or Hangul is one system, but a
/// Cyrillic `а` inside a Latin word is refused, so `аna` can't pass for `ana`.
pub(super) fn require_single_script_words(field: &'static str, s: &str) -> Result<(), FieldError> {
    for word in s.split(char::is_whitespace) {
        let mut seen = AugmentedScriptSet::default();
        // The first character that belongs to some scripts only, to name in a refusal.
        let mut first: Option<char> = None;
        for c in word.chars() {
            let this = AugmentedScriptSet::for_char(c);
            let mut both = seen;
            both.intersect_with(this);
            if both.is_empty() {
                let first = first.unwrap_or(c);
                return Err(FieldError::new(
                    field,
                    format!(
                        "must not mix writing systems in one word ({word:?} has {} U+{:04X} next to {this} \
                         U+{:04X}), so that no name can pass for another",
                        AugmentedScriptSet::for_char(first),
                        first as u32,
                        c as u32
                    ),
                ));
            }
            first = first.or((!this.is_all()).then_some(c));
            seen = both;
        }
    }
    Ok(())
}

/// `s` with each character that `refused` matches replaced by U+FFFD, so it shows.
pub(super) fn show_as_replacement(s: &str, refused: impl Fn(char) -> bool) -> String {
    s.chars().map(|c| if refused(c) { char::REPLACEMENT_CHARACTER } else { c }).collect()
}
