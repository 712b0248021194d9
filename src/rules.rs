//! Who may do what: access rules, bans and room settings, and the pure function that
//! decides a request's [`Access`] from them.
//!
//! The rules live in the store (`ssechat access`, `ssechat ban`, `ssechat room`); each node
//! keeps a snapshot of them ([`Directory`]) and reloads it when the store's change counter
//! moves (`policy.rs`), which also ends the streams that lost access.
//!
//! # Precedence
//! A rule names a subject (a user, `@users` for anyone signed in, `*` for everyone) and a
//! room pattern (`*` matches any run of characters). For a request:
//! 1. Admins may do everything.
//! 2. The signed-in user's own rules are looked at first; if none matches the room,
//!    `@users` rules (signed-in users only); if none matches, `*` rules; if none matches,
//!    `--default-access`.
//! 3. Within one level, the most specific matching pattern wins: fewer `*` first, then the
//!    longer literal part (`dev-ops` > `dev-*` > `d*` > `*`; `team-*-log` > `team-*` as it
//!    has more literal characters; `a*b*` < `ab*`). Between equally specific patterns the
//!    more restrictive permission wins (`deny`, then `ro`, `wo`, `rw`, `mod`).

mod ban;

pub use ban::{Ban, BanTarget};

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::auth::{Access, Identity};
use crate::domain::{Author, FieldError, RoomName, Timestamp};

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One user, by name.
    User(Author),
    /// Anyone signed in (`@users`).
    Users,
    /// Everyone, guests included (`*`).
    Everyone,
}

impl Subject {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s.trim() {
            "*" => Ok(Subject::Everyone),
            "@users" => Ok(Subject::Users),
            name => Author::parse(name).map(Subject::User).map_err(|e| {
                FieldError::new(
                    "subject",
                    format!("{}; or `*` (everyone) or `@users` (anyone signed in)", e.problem),
                )
            }),
        }
    }

    /// How close the subject is to `who`: 0 for their own rules, 1 for `@users`, 2 for `*`;
    /// `None` when the rule is not for them.
    fn level(&self, who: &Identity) -> Option<u8> {
        match (self, who) {
            (Subject::User(name), Identity::User { name: mine, .. }) if name == mine => Some(0),
            (Subject::Users, Identity::User { .. }) => Some(1),
            (Subject::Everyone, _) => Some(2),
            _ => None,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(name) => f.write_str(name.as_str()),
            Subject::Users => f.write_str("@users"),
            Subject::Everyone => f.write_str("*"),
        }
    }
}

/// A room name in which `*` matches any run of characters (none included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomPattern(String);

impl RoomPattern {
    pub const RULE: &'static str =
        "room patterns are 1 to 64 characters of a-z, 0-9, '-', '_' and '*' (any run of characters)";

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_*".contains(c);
        let s = s.trim();
        if s.is_empty() || s.len() > RoomName::MAX_LEN || !s.chars().all(ok_char) {
            let shown: String = s.chars().take(80).collect();
            return Err(FieldError::new(
                "pattern",
                format!("{shown:?} is not a room pattern: {}", Self::RULE),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, room: &RoomName) -> bool {
        glob(self.0.as_bytes(), room.as_str().as_bytes())
    }

    /// Larger is more specific: fewer wildcards, then more literal characters.
    fn specificity(&self) -> (Reverse<usize>, usize) {
        let wildcards = self.0.matches('*').count();
        (Reverse(wildcards), self.0.len() - wildcards)
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*`-only glob matching, iterative with one backtrack point (linear in practice).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    Rw,
    Ro,
    Wo,
    Deny,
    /// Read, write and moderate.
    Mod,
}

impl Perm {
    pub const RULE: &'static str = "a permission is rw, ro, wo, deny or mod";

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s.trim() {
            "rw" => Ok(Perm::Rw),
            "ro" => Ok(Perm::Ro),
            "wo" => Ok(Perm::Wo),
            "deny" => Ok(Perm::Deny),
            "mod" => Ok(Perm::Mod),
            other => {
                Err(FieldError::new("permission", format!("{other:?} is not a permission: {}", Self::RULE)))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Rw => "rw",
            Perm::Ro => "ro",
            Perm::Wo => "wo",
            Perm::Deny => "deny",
            Perm::Mod => "mod",
        }
    }

    pub fn access(self) -> Access {
        let (read, write, moderate) = match self {
            Perm::Rw => (true, true, false),
            Perm::Ro => (true, false, false),
            Perm::Wo => (false, true, false),
            Perm::Deny => (false, false, false),
            Perm::Mod => (true, true, true),
        };
        Access { read, write, moderate }
    }

    /// Larger is more restrictive: breaks ties between equally specific patterns.
    fn restriction(self) -> u8 {
        match self {
            Perm::Deny => 4,
            Perm::Ro => 3,
            Perm::Wo => 2,
            Perm::Rw => 1,
            Perm::Mod => 0,
        }
    }
}

/// What applies where no rule matches (`--default-access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DefaultAccess {
    #[default]
    Rw,
    Ro,
    Deny,
}

impl DefaultAccess {
    pub fn perm(self) -> Perm {
        match self {
            DefaultAccess::Rw => Perm::Rw,
            DefaultAccess::Ro => Perm::Ro,
            DefaultAccess::Deny => Perm::Deny,
        }
    }
}

/// One access rule: `ssechat access SUBJECT PATTERN PERM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub subject: Subject,
    pub pattern: RoomPattern,
    pub perm: Perm,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.subject, self.pattern, self.perm.as_str())
    }
}

/// What decided an access, for the refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Because {
    Admin,
    Rule(Rule),
    Default(DefaultAccess),
}

impl fmt::Display for Because {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Because::Admin => f.write_str("an administrator"),
            Because::Rule(rule) => write!(f, "the access rule `{rule}`"),
            Because::Default(default) => write!(f, "the default access ({})", default.perm().as_str()),
        }
    }
}

/// What `who` may do in `room`, and why.
pub fn decide(rules: &[Rule], who: &Identity, room: &RoomName, default: DefaultAccess) -> (Access, Because) {
    if who.is_admin() {
        return (Access { read: true, write: true, moderate: true }, Because::Admin);
    }
    let best = rules
        .iter()
        .filter(|rule| rule.pattern.matches(room))
        .filter_map(|rule| Some((rule.subject.level(who)?, rule)))
        .max_by_key(|(level, rule)| (Reverse(*level), rule.pattern.specificity(), rule.perm.restriction()));
    match best {
        Some((_, rule)) => (rule.perm.access(), Because::Rule(rule.clone())),
        None => (default.perm().access(), Because::Default(default)),
    }
}

/// What `who` may do in `room`: see the module's precedence.
pub fn evaluate(rules: &[Rule], who: &Identity, room: &RoomName, default: DefaultAccess) -> Access {
    decide(rules, who, room, default).0
}

/// A room's settings: `ssechat room ROOM --slow DUR`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomSettings {
    /// Slow mode: each sender one message per this long.
    pub slow: Option<Duration>,
}

/// Everything the store holds about who may do what, read at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// The store's change counter when this was read.
    pub generation: u64,
    pub rules: Vec<Rule>,
    pub bans: Vec<Ban>,
    pub rooms: HashMap<RoomName, RoomSettings>,
    /// Registered users' names by skeleton (`domain::skeleton`): the names a guest may not
    /// use, checked without asking the store.
    pub names: HashMap<String, Author>,
}

impl Directory {
    /// The first ban that keeps `who` (from `client`) out of `room` now.
    pub fn ban_on(&self, who: &Identity, client: IpAddr, room: &RoomName) -> Option<&Ban> {
        if who.is_admin() {
            return None;
        }
        let now = Timestamp::now();
        self.bans.iter().find(|ban| ban.applies(who, client, room, now))
    }

    /// The registered user `name` is, or looks like (the same skeleton), if any.
    pub fn registered(&self, name: &Author) -> Option<&Author> {
        self.names.get(&crate::domain::skeleton(name.as_str()))
    }

    pub fn settings(&self, room: &RoomName) -> RoomSettings {
        self.rooms.get(room).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subject: &str, pattern: &str, perm: &str) -> Rule {
        Rule {
            subject: Subject::parse(subject).unwrap(),
            pattern: RoomPattern::parse(pattern).unwrap(),
            perm: Perm::parse(perm).unwrap(),
        }
    }

    fn user(name: &str) -> Identity {
        Identity::User { name: Author::parse(name).unwrap(), admin: false }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn perm_of(rules: &[Rule], who: &Identity, name: &str, default: DefaultAccess) -> Access {
        evaluate(rules, who, &room(name), default)
    }

    #[test]
    fn patterns_match_with_stars() {
        let p = |s| RoomPattern::parse(s).unwrap();
        assert!(p("*").matches(&room("anything")));
        assert!(p("dev-*").matches(&room("dev-ops")));
        assert!(p("dev-*").matches(&room("dev-")));
        assert!(!p("dev-*").matches(&room("dev")));
        assert!(p("a*b*c").matches(&room("axxbyyc")));
        assert!(!p("a*b*c").matches(&room("axxbyy")));
        assert!(p("team-*-log").matches(&room("team-x-log")));
        assert!(p("exact").matches(&room("exact")) && !p("exact").matches(&room("exactly")));
        for bad in ["", "Dev", "dev ops", "a/b", &"x".repeat(65)] {
            let e = RoomPattern::parse(bad).unwrap_err();
            assert_eq!(e.field, "pattern");
            assert!(e.problem.contains("room pattern"), "{}", e.problem);
        }
    }

    #[test]
    fn no_rule_means_the_default() {
        for (default, read, write) in [
            (DefaultAccess::Rw, true, true),
            (DefaultAccess::Ro, true, false),
            (DefaultAccess::Deny, false, false),
        ] {
            let a = perm_of(&[], &Identity::Guest, "general", default);
            assert_eq!((a.read, a.write, a.moderate), (read, write, false));
        }
    }

    #[test]
    fn own_rules_beat_users_which_beat_everyone() {
        let rules = [rule("*", "*", "deny"), rule("@users", "*", "ro"), rule("ana", "*", "rw")];
        let rw = DefaultAccess::Rw;
        assert_eq!(perm_of(&rules, &Identity::Guest, "x", rw), Perm::Deny.access());
        assert_eq!(perm_of(&rules, &user("bob"), "x", rw), Perm::Ro.access());
        assert_eq!(perm_of(&rules, &user("ana"), "x", rw), Perm::Rw.access());
        // A more specific `*` rule does not beat a less specific own rule.
        let rules = [rule("*", "x", "rw"), rule("ana", "*", "deny")];
        assert_eq!(perm_of(&rules, &user("ana"), "x", rw), Perm::Deny.access());
        assert_eq!(perm_of(&rules, &user("bob"), "x", rw), Perm::Rw.access());
    }

    #[test]
    fn the_most_specific_pattern_wins_within_a_level() {
        let rules = [
            rule("*", "*", "deny"),
            rule("*", "d*", "ro"),
            rule("*", "dev-*", "wo"),
            rule("*", "dev-ops", "rw"),
            rule("*", "team-*", "ro"),
            rule("*", "team-*-log", "deny"),
        ];
        let d = DefaultAccess::Rw;
        assert_eq!(perm_of(&rules, &Identity::Guest, "dev-ops", d), Perm::Rw.access());
        assert_eq!(perm_of(&rules, &Identity::Guest, "dev-x", d), Perm::Wo.access());
        assert_eq!(perm_of(&rules, &Identity::Guest, "dx", d), Perm::Ro.access());
        assert_eq!(perm_of(&rules, &Identity::Guest, "zzz", d), Perm::Deny.access());
        assert_eq!(perm_of(&rules, &Identity::Guest, "team-a-log", d), Perm::Deny.access());
        assert_eq!(perm_of(&rules, &Identity::Guest, "team-a", d), Perm::Ro.access());
        // Fewer wildcards beat a longer literal part.
        let rules = [rule("*", "ab*", "ro"), rule("*", "a*b*", "rw")];
        assert_eq!(perm_of(&rules, &Identity::Guest, "abc", d), Perm::Ro.access());
    }

    /// The README's table, row by row.
    #[test]
    fn the_readme_examples_hold() {
        let rules = [
            rule("*", "team-*", "deny"),
            rule("@users", "team-*", "rw"),
            rule("ana", "team-ops", "mod"),
            rule("*", "news", "ro"),
        ];
        let d = DefaultAccess::Rw;
        assert_eq!(perm_of(&rules, &Identity::Guest, "team-ops", d), Perm::Deny.access());
        assert_eq!(perm_of(&rules, &user("bob"), "team-ops", d), Perm::Rw.access());
        assert_eq!(perm_of(&rules, &user("ana"), "team-ops", d), Perm::Mod.access());
        assert_eq!(perm_of(&rules, &user("bob"), "news", d), Perm::Ro.access());
        assert_eq!(perm_of(&rules, &Identity::Guest, "lobby", d), Perm::Rw.access());
        let p = |s| RoomPattern::parse(s).unwrap().specificity();
        assert!(p("team-ops") > p("team-*") && p("team-*") > p("t*") && p("t*") > p("*"));
        assert!(p("ab*") > p("a*b*"));
        let ban = Ban {
            target: BanTarget::parse("203.0.113.7").unwrap(),
            room: Some(room("lobby")),
            until: Timestamp::from_millis(1_795_672_800_000),
        };
        assert_eq!(
            ban.describe(),
            "203.0.113.7/32 is banned from room \"lobby\" until 2026-11-26T06:00:00.000Z"
        );
    }

    #[test]
    fn ties_go_to_the_more_restrictive() {
        let rules = [rule("*", "a*", "rw"), rule("*", "*a", "deny")];
        assert_eq!(perm_of(&rules, &Identity::Guest, "aba", DefaultAccess::Rw), Perm::Deny.access());
    }

    #[test]
    fn users_rules_are_not_for_guests_and_admins_may_everything() {
        let rules = [rule("@users", "*", "rw"), rule("*", "*", "deny")];
        assert_eq!(perm_of(&rules, &Identity::Guest, "x", DefaultAccess::Rw), Perm::Deny.access());
        let admin = Identity::User { name: Author::parse("root").unwrap(), admin: true };
        let a = perm_of(&[rule("root", "*", "deny")], &admin, "x", DefaultAccess::Deny);
        assert!(a.read && a.write && a.moderate);
    }

    #[test]
    fn mod_reads_writes_and_moderates_and_wo_only_writes() {
        assert_eq!(Perm::Mod.access(), Access { read: true, write: true, moderate: true });
        assert_eq!(Perm::Wo.access(), Access { read: false, write: true, moderate: false });
    }

    #[test]
    fn the_reason_names_the_rule() {
        let rules = [rule("*", "secret-*", "deny")];
        let (_, why) = decide(&rules, &Identity::Guest, &room("secret-x"), DefaultAccess::Rw);
        assert_eq!(why.to_string(), "the access rule `* secret-* deny`");
        let (_, why) = decide(&rules, &Identity::Guest, &room("open"), DefaultAccess::Deny);
        assert_eq!(why.to_string(), "the default access (deny)");
    }

    #[test]
    fn subjects_and_perms_parse_with_clear_errors() {
        assert_eq!(Subject::parse("*").unwrap(), Subject::Everyone);
        assert_eq!(Subject::parse("@users").unwrap(), Subject::Users);
        assert!(Subject::parse("").unwrap_err().problem.contains("@users"));
        let e = Perm::parse("write").unwrap_err();
        assert!(e.problem.contains("rw, ro, wo, deny or mod"), "{}", e.problem);
    }
}
