//! The memory store's directory: rules, bans and room settings in one locked value.

use std::sync::Mutex;

use crate::domain::RoomName;
use crate::rules::{Ban, BanTarget, Directory, RoomPattern, RoomSettings, Rule, Subject};

#[derive(Default)]
pub struct LocalDirectory {
    /// A std mutex: never held across an await. Each write bumps the generation under it.
    dir: Mutex<Directory>,
}

impl LocalDirectory {
    /// Runs `write` on the directory and bumps the generation, as one step.
    fn write<T>(&self, write: impl FnOnce(&mut Directory) -> T) -> T {
        let mut dir = self.dir.lock().expect("directory poisoned");
        let out = write(&mut dir);
        bump_generation(&mut dir);
        out
    }

    /// Moves the generation alone (after an accounts write), so open streams are looked at.
    pub fn touch(&self) {
        self.write(|_| ());
    }

    pub fn generation(&self) -> u64 {
        self.dir.lock().expect("directory poisoned").generation
    }

    pub fn snapshot(&self) -> Directory {
        self.dir.lock().expect("directory poisoned").clone()
    }

    pub fn set_rule(&self, rule: &Rule) {
        self.write(|dir| {
            dir.rules.retain(|r| !(r.subject == rule.subject && r.pattern == rule.pattern));
            dir.rules.push(rule.clone());
        })
    }

    pub fn reset_rules(&self, subject: &Subject, pattern: Option<&RoomPattern>) -> u64 {
        self.write(|dir| {
            let before = dir.rules.len();
            dir.rules.retain(|r| !(&r.subject == subject && pattern.is_none_or(|p| &r.pattern == p)));
            (before - dir.rules.len()) as u64
        })
    }

    pub fn add_ban(&self, ban: &Ban) {
        self.write(|dir| {
            dir.bans.retain(|b| !(b.target == ban.target && b.room == ban.room));
            dir.bans.push(ban.clone());
        })
    }

    pub fn remove_ban(&self, target: &BanTarget, room: Option<&RoomName>) -> u64 {
        self.write(|dir| {
            let before = dir.bans.len();
            dir.bans.retain(|b| !(&b.target == target && b.room.as_ref() == room));
            (before - dir.bans.len()) as u64
        })
    }

    pub fn set_room(&self, room: &RoomName, settings: RoomSettings) {
        self.write(|dir| {
            if settings == RoomSettings::default() {
                dir.rooms.remove(room);
            } else {
                dir.rooms.insert(room.clone(), settings);
            }
        })
    }
}

/// The one step every directory write takes.
fn bump_generation(dir: &mut Directory) {
    dir.generation += 1;
}
