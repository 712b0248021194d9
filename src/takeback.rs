//! Who may take a message back: delete it, or edit it.
//!
//! - Its author, signed in, may delete it at any time and edit it within `--edit-window`
//!   of posting. "Its author" means signed in under the message's author name *and* the
//!   message was posted signed in: a guest's message under the same name is nobody's.
//! - A moderator of the room (`mod`) and an admin may delete any message; they may not edit
//!   other people's words.
//! - Guests may do neither (sign in first).
//!
//! The decision is [`may_change`], a pure function: the routes and the page ask it alike.

use std::time::Duration;

use crate::auth::{Access, Identity};
use crate::domain::{Author, Change, Message, RoomName, TakeBack, Timestamp};
use crate::error::AppError;
use crate::rules::{Ban, BanTarget};
use crate::store::{Range, Store, StoreError};

/// Whether `message` was posted by a signed-in user (rather than by a guest typing a name).
///
/// The one place that reads it: a message carries `user: true` when its sender was signed
/// in; a guest's message belongs to nobody, whatever name is on it.
pub fn posted_signed_in(message: &Message) -> bool {
    message.user
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A guest: signing in may help (`401`).
    SignIn,
    /// Signed in, but this message is not theirs to change (`403`).
    NotYours,
    /// Their own message, past the edit window (`409`).
    TooLate { window: Duration },
}

impl Refused {
    /// The error a client gets, naming why. `what` is `delete` or `edit`.
    pub fn into_error(self, change: &Change) -> AppError {
        let what = verb(change);
        match self {
            Refused::SignIn => AppError::Unauthorized(format!("sign in to {what} messages")),
            Refused::NotYours if matches!(change, Change::Delete) => AppError::Forbidden(
                "only the message's author (signed in when posting), a moderator of the room or an admin may delete it"
                    .to_owned(),
            ),
            Refused::NotYours => AppError::Forbidden(
                "only the message's author, signed in when posting, may edit it".to_owned(),
            ),
            Refused::TooLate { window } => AppError::Conflict(format!(
                "messages can be edited for {} after they are posted; this one is older",
                humantime::format_duration(window)
            )),
        }
    }
}

fn verb(change: &Change) -> &'static str {
    match change {
        Change::Delete => "delete",
        Change::Edit(_) => "edit",
    }
}

/// Whether `who`, with `access` to the message's room, may make `change` to `message` at
/// `now`, edits being allowed for `window` after posting.
pub fn may_change(
    who: &Identity,
    access: Access,
    message: &Message,
    change: &Change,
    now: Timestamp,
    window: Duration,
) -> Result<(), Refused> {
    decide(who, access, message, posted_signed_in(message), change, (now, window))
}

/// [`may_change`], with whether the message was posted signed in given.
fn decide(
    who: &Identity,
    access: Access,
    message: &Message,
    signed_in: bool,
    change: &Change,
    (now, window): (Timestamp, Duration),
) -> Result<(), Refused> {
    let Some(name) = who.user() else { return Err(Refused::SignIn) };
    let author = *name == message.author && signed_in;
    match change {
        Change::Delete if author || access.moderate || who.is_admin() => Ok(()),
        Change::Edit(_) if author && within(message.time, now, window) => Ok(()),
        Change::Edit(_) if author => Err(Refused::TooLate { window }),
        _ => Err(Refused::NotYours),
    }
}

/// Whether `now` is at most `window` after `posted` (a zero window: never).
fn within(posted: Timestamp, now: Timestamp, window: Duration) -> bool {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    !window.is_zero() && now.millis().saturating_sub(posted.millis()) <= window_ms
}

/// What the page offers one reader for one message: the controls shown are exactly the
/// changes [`may_change`] allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls {
    pub delete: bool,
    pub edit: bool,
}

impl Controls {
    pub fn for_message(who: &Identity, access: Access, message: &Message, window: Duration) -> Self {
        let now = Timestamp::now();
        let allowed = |change| may_change(who, access, message, &change, now, window).is_ok();
        // The text of a would-be edit does not matter to the decision.
        let edit = Change::Edit(message.text.clone());
        Self { delete: allowed(Change::Delete), edit: allowed(edit) }
    }
}

/// Whose messages a purge deletes: a user's; messages do not record addresses.
pub fn purged_user(ban: &Ban) -> Result<&Author, String> {
    match &ban.target {
        BanTarget::User(name) => Ok(name),
        BanTarget::Net(net) => Err(format!(
            "--purge needs a user name: messages do not record the address they came from ({net})"
        )),
    }
}

/// The newest log entries of a room a purge looks through, and the most active rooms it
/// looks at when a ban covers every room: a purge is bounded, whatever the history.
pub const PURGE_ENTRIES: usize = 1000;
pub const PURGE_ROOMS: usize = 1000;

/// With a ban (`--purge`): deletes, as log entries, the messages `user` posted signed in
/// among the newest [`PURGE_ENTRIES`] of `room`, or of each of the [`PURGE_ROOMS`] most
/// active rooms. Every open page and resuming client sees the deletes. Returns how many.
pub async fn purge(store: &dyn Store, user: &Author, room: Option<&RoomName>) -> Result<u64, StoreError> {
    let rooms = match room {
        Some(room) => vec![room.clone()],
        None => store.rooms(PURGE_ROOMS).await?.into_iter().map(|r| r.name).collect(),
    };
    let mut deleted = 0;
    for room in rooms {
        let page = store.read(&room, Range::Latest, PURGE_ENTRIES).await?;
        let theirs = page.current().into_iter().filter(|m| posted_signed_in(m) && m.author == *user);
        for message in theirs.collect::<Vec<_>>() {
            let change = TakeBack { room: room.clone(), target: message.id, change: Change::Delete };
            deleted += u64::from(store.take_back(change).await?.is_some());
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Author, MessageText, NewMessage};

    const WINDOW: Duration = Duration::from_secs(15 * 60);

    /// The rules, with whether the message was posted signed in given (`posted_signed_in`
    /// says no for every message until accounts exist), `age` after posting.
    fn decide(
        who: &Identity,
        access: Access,
        signed: bool,
        change: &Change,
        age: Duration,
    ) -> Result<(), Refused> {
        let message = message();
        let now = Timestamp::from_millis(message.time.millis() + age.as_millis() as i64).unwrap();
        super::decide(who, access, &message, signed, change, (now, WINDOW))
    }

    fn message() -> Message {
        let new = NewMessage::parse("general", Some("ana"), Some("hi")).unwrap();
        Message::new(1, new, Timestamp::from_millis(1_764_072_062_345).unwrap())
    }

    fn user(name: &str, admin: bool) -> Identity {
        Identity::User { name: Author::parse(name).unwrap(), admin }
    }

    fn edit() -> Change {
        Change::Edit(MessageText::parse("new").unwrap())
    }

    const MODERATOR: Access = Access { read: true, write: true, moderate: true };
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn guests_may_do_nothing() {
        for access in [Access::OPEN, MODERATOR] {
            for change in [Change::Delete, edit()] {
                let refused =
                    may_change(&Identity::Guest, access, &message(), &change, message().time, WINDOW);
                assert_eq!(refused, Err(Refused::SignIn));
                assert_eq!(refused.unwrap_err().into_error(&change).status(), 401);
            }
        }
    }

    #[test]
    fn a_guests_message_is_nobodys_even_under_a_users_name() {
        let ana = user("ana", false);
        for change in [Change::Delete, edit()] {
            let refused = may_change(&ana, Access::OPEN, &message(), &change, message().time, WINDOW);
            assert_eq!(refused, Err(Refused::NotYours), "{change:?}");
            let signed = Message { user: true, ..message() };
            assert_eq!(may_change(&ana, Access::OPEN, &signed, &change, signed.time, WINDOW), Ok(()));
        }
    }

    #[test]
    fn authors_delete_any_time_and_edit_within_the_window() {
        let ana = user("ana", false);
        assert_eq!(decide(&ana, Access::OPEN, true, &Change::Delete, 1000 * MINUTE), Ok(()));
        assert_eq!(decide(&ana, Access::OPEN, true, &edit(), 15 * MINUTE), Ok(()));
        let late = decide(&ana, Access::OPEN, true, &edit(), 16 * MINUTE);
        assert_eq!(late, Err(Refused::TooLate { window: WINDOW }));
        let error = late.unwrap_err().into_error(&edit());
        assert_eq!(error.status(), 409);
        assert!(error.to_string().contains("15m"), "{error}");
        let m = message();
        let never = super::decide(&ana, Access::OPEN, &m, true, &edit(), (m.time, Duration::ZERO));
        assert_eq!(never, Err(Refused::TooLate { window: Duration::ZERO }), "a zero window: never");
    }

    #[test]
    fn a_guest_message_under_a_users_name_is_not_theirs() {
        let ana = user("ana", false);
        assert_eq!(decide(&ana, Access::OPEN, false, &edit(), MINUTE), Err(Refused::NotYours));
        assert_eq!(decide(&ana, Access::OPEN, false, &Change::Delete, MINUTE), Err(Refused::NotYours));
    }

    #[test]
    fn others_may_not_unless_moderators_or_admins_and_then_only_delete() {
        let bob = user("bob", false);
        let refused = decide(&bob, Access::OPEN, true, &Change::Delete, MINUTE);
        assert_eq!(refused, Err(Refused::NotYours));
        let error = refused.unwrap_err().into_error(&Change::Delete);
        assert_eq!(error.status(), 403);
        assert!(error.to_string().contains("moderator"), "{error}");
        for signed in [true, false] {
            assert_eq!(decide(&bob, MODERATOR, signed, &Change::Delete, MINUTE), Ok(()));
            assert_eq!(decide(&user("root", true), Access::OPEN, signed, &Change::Delete, MINUTE), Ok(()));
            assert_eq!(decide(&bob, MODERATOR, signed, &edit(), MINUTE), Err(Refused::NotYours));
            assert_eq!(
                decide(&user("root", true), MODERATOR, signed, &edit(), MINUTE),
                Err(Refused::NotYours)
            );
        }
    }

    #[test]
    fn the_page_offers_exactly_what_is_allowed() {
        let m = message();
        assert_eq!(Controls::for_message(&Identity::Guest, MODERATOR, &m, WINDOW), Controls::default());
        let moderator = Controls::for_message(&user("bob", false), MODERATOR, &m, WINDOW);
        assert_eq!(moderator, Controls { delete: true, edit: false });
        let admin = Controls::for_message(&user("root", true), Access::OPEN, &m, WINDOW);
        assert_eq!(admin, Controls { delete: true, edit: false });
        assert_eq!(Controls::for_message(&user("bob", false), Access::OPEN, &m, WINDOW), Controls::default());
    }
}
