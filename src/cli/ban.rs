//! `ssechat ban [TARGET [--room ROOM] [--for DUR]]` and `ssechat unban TARGET [--room ROOM]`.

use std::time::Duration;

use super::{Outcome, failed, invalid};
use crate::domain::{RoomName, Timestamp};
use crate::policy::{Ban, BanTarget};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct BanArgs {
    /// A user name, an IP address or a CIDR range. Without one: list the bans.
    target: Option<String>,
    /// Only in this room (otherwise: every room).
    #[arg(long)]
    room: Option<String>,
    /// For this long, for example `1h` or `7d` (otherwise: until lifted).
    #[arg(long = "for", value_parser = crate::config::positive_duration)]
    duration: Option<Duration>,
    /// Also delete the user's recent messages (signed in, among each room's newest 1,000
    /// entries), as log entries every reader sees.
    #[arg(long)]
    purge: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UnbanArgs {
    /// The user name, address or range the ban is for.
    target: String,
    /// The room the ban is for (otherwise: the ban on every room).
    #[arg(long)]
    room: Option<String>,
}

pub async fn run(args: BanArgs, store: &dyn Store) -> Outcome {
    let Some(target) = args.target else {
        if args.room.is_some() || args.duration.is_some() || args.purge {
            return Err(
                "usage: ssechat ban TARGET [--room ROOM] [--for DUR] [--purge] (no TARGET: list)".to_owned()
            );
        }
        return list(store).await;
    };
    let ban = Ban {
        target: BanTarget::parse(&target).map_err(invalid)?,
        room: room(args.room.as_deref())?,
        until: args.duration.map(until).transpose()?,
    };
    let purge = args.purge.then(|| crate::takeback::purged_user(&ban)).transpose()?;
    store.add_ban(&ban).await.map_err(failed)?;
    let Some(user) = purge else { return Ok(ban.describe()) };
    let deleted = crate::takeback::purge(store, user, ban.room.as_ref()).await.map_err(failed)?;
    Ok(format!("{}; {deleted} of their messages deleted", ban.describe()))
}

pub async fn unban(args: UnbanArgs, store: &dyn Store) -> Outcome {
    let target = BanTarget::parse(&args.target).map_err(invalid)?;
    let room = room(args.room.as_deref())?;
    match store.remove_ban(&target, room.as_ref()).await.map_err(failed)? {
        0 => Err(format!("no such ban: {target}{}", room.map_or(String::new(), |r| format!(" in room {r}")))),
        _ => Ok(format!("ban on {target} lifted")),
    }
}

fn room(name: Option<&str>) -> Result<Option<RoomName>, String> {
    name.map(RoomName::parse).transpose().map_err(invalid)
}

/// When a ban given `for` this long ends.
pub fn until(duration: Duration) -> Result<Timestamp, String> {
    let ms = i64::try_from(duration.as_millis()).map_err(|_| "the duration is too long".to_owned())?;
    Timestamp::from_millis(Timestamp::now().millis().saturating_add(ms))
        .ok_or("the duration is too long".to_owned())
}

async fn list(store: &dyn Store) -> Outcome {
    let bans = store.directory().await.map_err(failed)?.bans;
    if bans.is_empty() {
        return Ok("no bans".to_owned());
    }
    Ok(bans.iter().map(|b| format!("{}\n", b.describe())).collect())
}
