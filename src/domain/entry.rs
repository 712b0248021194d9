//! A room's log: messages, and the deletes and edits that take them back.
//!
//! A delete or an edit is an entry of its own, with its own id from the room's one
//! sequence, so everything that follows ids (resume, `Last-Event-ID`, `reset`, retention)
//! treats it like a message. The current state of a room is its log folded in id order.

use std::collections::HashMap;

use super::{Message, MessageId, MessageText, RoomName, Timestamp};

/// One entry of a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Message(Message),
    /// `target` was deleted at `time`.
    Delete {
        id: MessageId,
        room: RoomName,
        target: MessageId,
        time: Timestamp,
    },
    /// The whole message as it reads after the edit (its id is the target's, its `edited`
    /// set); `id` is the entry's own.
    Edit {
        id: MessageId,
        message: Message,
    },
}

impl Entry {
    /// The entry's own id.
    pub fn id(&self) -> MessageId {
        match self {
            Entry::Message(m) => m.id,
            Entry::Delete { id, .. } | Entry::Edit { id, .. } => *id,
        }
    }

    pub fn room(&self) -> &RoomName {
        match self {
            Entry::Message(m) | Entry::Edit { message: m, .. } => &m.room,
            Entry::Delete { room, .. } => room,
        }
    }

    /// When the entry was written: what retention by age goes by.
    pub fn time(&self) -> Timestamp {
        match self {
            Entry::Message(m) => m.time,
            Entry::Delete { time, .. } => *time,
            Entry::Edit { message, .. } => message.edited.unwrap_or(message.time),
        }
    }

    /// The message the entry is about (a message is about itself).
    pub fn target(&self) -> MessageId {
        match self {
            Entry::Message(m) | Entry::Edit { message: m, .. } => m.id,
            Entry::Delete { target, .. } => *target,
        }
    }

    /// The message itself, if this entry is one.
    pub fn as_message(&self) -> Option<&Message> {
        match self {
            Entry::Message(m) => Some(m),
            _ => None,
        }
    }
}

/// What someone asks to do to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Delete,
    Edit(MessageText),
}

/// A change to one message of a room, validated, waiting for the store to give it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeBack {
    pub room: RoomName,
    pub target: MessageId,
    pub change: Change,
}

impl TakeBack {
    /// The entry this change makes, with id `id` at `now`, of `current` (the target as it
    /// reads now).
    pub fn entry(&self, id: MessageId, current: Message, now: Timestamp) -> Entry {
        match &self.change {
            Change::Delete => Entry::Delete { id, room: self.room.clone(), target: self.target, time: now },
            Change::Edit(text) => {
                Entry::Edit { id, message: Message { text: text.clone(), edited: Some(now), ..current } }
            }
        }
    }
}

/// The current state of a log, oldest first: deleted messages gone, edited ones as they
/// now read. Deletes and edits of messages not in `entries` (pruned) change nothing.
pub fn current_state(entries: impl IntoIterator<Item = Entry>) -> Vec<Message> {
    let mut messages: Vec<Option<Message>> = Vec::new();
    let mut index: HashMap<MessageId, usize> = HashMap::new();
    for entry in entries {
        match entry {
            Entry::Message(m) => {
                index.insert(m.id, messages.len());
                messages.push(Some(m));
            }
            Entry::Edit { message, .. } => {
                if let Some(slot) = index.get(&message.id).and_then(|&i| messages[i].as_mut()) {
                    *slot = message;
                }
            }
            Entry::Delete { target, .. } => {
                if let Some(&i) = index.get(&target) {
                    messages[i] = None;
                }
            }
        }
    }
    messages.into_iter().flatten().collect()
}

/// How message `target` reads after `entries` (its own entry and those after it, in id
/// order): `None` if it is not among them or was deleted.
pub fn current_message(target: MessageId, entries: impl IntoIterator<Item = Entry>) -> Option<Message> {
    let mine = entries.into_iter().filter(|e| e.target() == target);
    current_state(mine).pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewMessage;

    fn message(id: MessageId, text: &str) -> Message {
        let new = NewMessage::parse("general", Some("ana"), Some(text)).unwrap();
        Message::new(id, new, Timestamp::from_millis(1_764_072_062_345).unwrap())
    }

    fn edit(id: MessageId, target: MessageId, text: &str) -> Entry {
        let change = TakeBack {
            room: RoomName::general(),
            target,
            change: Change::Edit(MessageText::parse(text).unwrap()),
        };
        change.entry(id, message(target, "old"), Timestamp::from_millis(1_764_072_099_000).unwrap())
    }

    fn delete(id: MessageId, target: MessageId) -> Entry {
        let change = TakeBack { room: RoomName::general(), target, change: Change::Delete };
        change.entry(id, message(target, "old"), Timestamp::now())
    }

    fn texts(messages: &[Message]) -> Vec<(MessageId, &str, bool)> {
        messages.iter().map(|m| (m.id, m.text.as_str(), m.edited.is_some())).collect()
    }

    #[test]
    fn folding_drops_deleted_and_updates_edited() {
        let log = vec![
            Entry::Message(message(1, "a")),
            Entry::Message(message(2, "b")),
            edit(3, 1, "a2"),
            delete(4, 2),
            Entry::Message(message(5, "c")),
            edit(6, 1, "a3"),
            edit(7, 99, "pruned target: nothing"),
            delete(8, 98),
        ];
        let current = current_state(log.clone());
        assert_eq!(texts(&current), [(1, "a3", true), (5, "c", false)]);
        assert_eq!(current_message(1, log.clone()).unwrap().text.as_str(), "a3");
        assert_eq!(current_message(2, log.clone()), None, "deleted");
        assert_eq!(current_message(99, log), None, "not held");
    }

    #[test]
    fn an_edit_after_a_delete_does_not_bring_it_back() {
        let log = vec![Entry::Message(message(1, "a")), delete(2, 1), edit(3, 1, "back?")];
        assert!(current_state(log).is_empty());
    }

    #[test]
    fn entries_know_their_ids_targets_and_times() {
        let e = edit(3, 1, "x");
        assert_eq!((e.id(), e.target()), (3, 1));
        assert_eq!(e.time().millis(), 1_764_072_099_000, "an edit's time is when it was made");
        assert_eq!(delete(4, 2).target(), 2);
    }
}
