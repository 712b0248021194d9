//! `ssechat room ROOM [--slow DUR|off]`.

use std::time::Duration;

use super::{Outcome, failed, invalid};
use crate::domain::RoomName;
use crate::policy::RoomSettings;
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct RoomArgs {
    room: String,
    /// Slow mode: each sender one message per DUR (for example `30s`); `off` ends it.
    #[arg(long, value_parser = slow)]
    slow: Option<Slow>,
}

#[derive(Debug, Clone, Copy)]
pub struct Slow(Option<Duration>);

fn slow(s: &str) -> Result<Slow, String> {
    match s.trim() {
        "off" | "0" => Ok(Slow(None)),
        other => crate::config::positive_duration(other).map(|d| Slow(Some(d))),
    }
}

pub async fn run(args: RoomArgs, store: &dyn Store) -> Outcome {
    let room = RoomName::parse(&args.room).map_err(invalid)?;
    if let Some(Slow(slow)) = args.slow {
        store.set_room(&room, RoomSettings { slow }).await.map_err(failed)?;
    }
    let settings = store.directory().await.map_err(failed)?.settings(&room);
    Ok(match settings.slow {
        Some(every) => format!(
            "room {room}: slow mode, one message per {} per sender",
            humantime::format_duration(every)
        ),
        None => format!("room {room}: slow mode off"),
    })
}
