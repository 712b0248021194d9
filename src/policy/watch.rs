//! Each node's view of the rules, and the watcher that keeps it (and open streams) current.
//!
//! The node holds one snapshot of the store's [`Directory`]. Every `POLL` the watcher asks
//! the store for its change counter (the "directory generation", bumped by every write to
//! rules, bans and room settings; one `GET` on Redis); when it moved, it reloads the
//! snapshot and tells every open stream through the hub (an internal frame on every room's
//! channel: no list of streams, nothing kept per stream). Each stream then checks its own
//! reader against the new snapshot, in memory; one that may no longer read is ended through
//! its [`Feed`](crate::feed::Feed) with a `revoked` event.

use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::accounts::credential_holds;
use crate::auth::{Access, Credential, Identity};
use crate::domain::RoomName;
use crate::hub::Hub;
use crate::rules::{DefaultAccess, Directory, decide};
use crate::store::{Store, StoreError};

/// How often each node asks whether the rules changed: a change reaches every node within
/// this (plus one reload), well under the 1 s promised.
pub const POLL: Duration = Duration::from_millis(250);

/// Why a signed-in stream ends when its user is deleted or changes password.
const SIGNED_OUT: &str =
    "you were signed out (the account was deleted or its password changed); sign in again";

/// What a request needs in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// Why a request was refused: said to the client, and to a stream that is ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: String,
    /// Signing in might help (a guest refused by the rules): `401` rather than `403`.
    pub sign_in: bool,
}

/// Whether `who`, asking from `client`, may do what `need` says in `room`; the access they
/// have there when they may.
pub fn check(
    dir: &Directory,
    who: &Identity,
    client: IpAddr,
    room: &RoomName,
    default: DefaultAccess,
    need: Need,
) -> Result<Access, Denial> {
    if let Some(ban) = dir.ban_on(who, client, room) {
        return Err(Denial { reason: ban.describe(), sign_in: false });
    }
    let (access, because) = decide(&dir.rules, who, room, default);
    let (allowed, verb) = match need {
        Need::Read => (access.read, "read"),
        Need::Write => (access.write, "post in"),
    };
    if allowed {
        return Ok(access);
    }
    let guest = matches!(who, Identity::Guest);
    let reason = if guest {
        format!("guests may not {verb} room {:?} ({because}); sign in first", room.as_str())
    } else {
        format!("you may not {verb} room {:?} ({because})", room.as_str())
    };
    Err(Denial { reason, sign_in: guest })
}

/// An open stream's reader, as far as access goes; its stream asks [`Watched::recheck`].
pub struct Watched {
    policy: Arc<Policy>,
    who: Identity,
    client: IpAddr,
    /// What signed the reader in: a user deleted, or whose password changed, is out.
    credential: Option<Credential>,
}

impl Watched {
    /// Why this reader may no longer read `room` (its rules, a ban, or its user deleted or
    /// its password changed), if so.
    pub async fn recheck(&self, room: &RoomName) -> Option<String> {
        let dir = self.policy.snapshot()?;
        if let Err(denial) = check(&dir, &self.who, self.client, room, self.policy.default, Need::Read) {
            return Some(denial.reason);
        }
        let (Some(credential), Ok(store)) = (&self.credential, self.policy.store()) else { return None };
        (!credential_holds(&*store, credential).await).then(|| SIGNED_OUT.to_owned())
    }
}

/// The node's snapshot of the rules, and how open streams hear of a new one.
pub struct Policy {
    /// Weak, like every reference kept beside the app: the policy (held a moment longer by
    /// its watcher) must never keep a store, and its file lock, alive after the app is gone.
    store: Weak<dyn Store>,
    pub default: DefaultAccess,
    /// A std lock: held only to clone or swap the `Arc`, never across an await.
    current: RwLock<Option<Arc<Directory>>>,
    /// Every room's streams hear of a new snapshot through it (weak: the hub outlives
    /// nothing it serves).
    hub: Weak<Hub>,
}

impl Policy {
    pub fn new(store: &Arc<dyn Store>, hub: &Arc<Hub>, default: DefaultAccess) -> Arc<Self> {
        let store = Arc::downgrade(store);
        Arc::new(Self { store, default, current: RwLock::new(None), hub: Arc::downgrade(hub) })
    }

    /// The store, while the app lives.
    fn store(&self) -> Result<Arc<dyn Store>, StoreError> {
        self.store.upgrade().ok_or_else(|| StoreError::Unavailable("the store is closed".to_owned()))
    }

    /// The snapshot, if one was read.
    fn snapshot(&self) -> Option<Arc<Directory>> {
        self.current.read().expect("snapshot poisoned").clone()
    }

    /// Polls the store every [`POLL`] until `stop`.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let policy = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let Some(policy) = policy.upgrade() else { return };
                // The app is gone (its store closed): nothing left to watch, nothing to say.
                if policy.store.strong_count() == 0 {
                    return;
                }
                if let Err(e) = policy.refresh().await {
                    tracing::warn!(error = %e, "cannot read the access rules; keeping the last ones");
                }
            }
        });
    }

    /// The current snapshot, read from the store the first time.
    pub async fn directory(&self) -> Result<Arc<Directory>, StoreError> {
        if let Some(dir) = self.snapshot() {
            return Ok(dir);
        }
        self.reload().await
    }

    /// Reloads the snapshot if the store's generation moved, and ends the streams that lost
    /// access. Returns whether it moved.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let generation = self.store()?.generation().await?;
        let known = self.current.read().expect("snapshot poisoned").as_ref().map(|d| d.generation);
        if known == Some(generation) {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Reads the snapshot now (after a write on this node, or at start), and has every open
    /// stream look at it.
    pub async fn reload(&self) -> Result<Arc<Directory>, StoreError> {
        let store = self.store()?;
        let mut dir = store.directory().await?;
        let users = store.users().await?;
        dir.names =
            users.into_iter().map(|user| (crate::domain::skeleton(user.name.as_str()), user.name)).collect();
        let dir = Arc::new(dir);
        *self.current.write().expect("snapshot poisoned") = Some(Arc::clone(&dir));
        if let Some(hub) = self.hub.upgrade() {
            hub.recheck();
        }
        Ok(dir)
    }

    /// What an open stream holds to hear that its reader lost access.
    pub fn watch(
        self: &Arc<Self>,
        who: &Identity,
        client: IpAddr,
        credential: Option<Credential>,
    ) -> Watched {
        Watched { policy: Arc::clone(self), who: who.clone(), client, credential }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Author;
    use crate::hub::Hub;
    use crate::policy::{Ban, BanTarget, Perm, RoomPattern, Rule, Subject};
    use crate::store::{MemoryStore, Retention};

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn deny_everyone(pattern: &str) -> Rule {
        Rule { subject: Subject::Everyone, pattern: RoomPattern::parse(pattern).unwrap(), perm: Perm::Deny }
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn guests_may_sign_in_users_are_refused_and_bans_refuse_everyone() {
        let dir = Directory { rules: vec![deny_everyone("x")], ..Directory::default() };
        let ana = Identity::User { name: Author::parse("ana").unwrap(), admin: false };
        let guest =
            check(&dir, &Identity::Guest, HERE, &room("x"), DefaultAccess::Rw, Need::Read).unwrap_err();
        assert!(guest.sign_in && guest.reason.contains("guests may not read room \"x\""), "{guest:?}");
        let user = check(&dir, &ana, HERE, &room("x"), DefaultAccess::Rw, Need::Write).unwrap_err();
        assert!(!user.sign_in && user.reason.starts_with("you may not post in room \"x\""), "{user:?}");
        let ban = Ban { target: BanTarget::parse("ana").unwrap(), room: None, until: None };
        let dir = Directory { bans: vec![ban], ..Directory::default() };
        let banned = check(&dir, &ana, HERE, &room("y"), DefaultAccess::Rw, Need::Read).unwrap_err();
        assert!(!banned.sign_in && banned.reason.contains("ana is banned from every room"), "{banned:?}");
        assert!(check(&dir, &Identity::Guest, HERE, &room("y"), DefaultAccess::Rw, Need::Read).is_ok());
    }

    #[tokio::test]
    async fn a_change_revokes_exactly_the_streams_that_lost_read_access() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Hub::new(4), Retention::count(10)));
        let hub = Hub::new(4);
        let policy = Policy::new(&store, &hub, DefaultAccess::Rw);
        assert!(policy.refresh().await.unwrap(), "the first look loads");
        let watched: Vec<Watched> = (0..3).map(|_| policy.watch(&Identity::Guest, HERE, None)).collect();
        let rooms = [room("a"), room("a"), room("b")];
        let mut told = hub.subscribe(&rooms[0]);
        assert!(!policy.refresh().await.unwrap(), "nothing moved");
        store.set_rule(&deny_everyone("a")).await.unwrap();
        assert!(policy.refresh().await.unwrap());
        let frame = told.receiver().try_recv().expect("every room's streams are told");
        assert!(matches!(frame.event(), crate::wire::Event::Recheck));
        for (w, room) in watched.iter().zip(&rooms).take(2) {
            let why = w.recheck(room).await.expect("revoked");
            assert!(why.contains("`* a deny`"), "{why}");
        }
        assert_eq!(watched[2].recheck(&rooms[2]).await, None, "room b stays readable");
    }
}
