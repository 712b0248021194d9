//! The Redis store's directory: rules, bans and room settings under one hash tag, so that
//! every read and write of them is one slot (Redis Cluster ready):
//! - `ssechat:{directory}:rules`: hash, `SUBJECT\nPATTERN` -> `PERM`;
//! - `ssechat:{directory}:bans`: hash, `TARGET\nROOM` (`ROOM` empty: every room) -> until
//!   (ms since the epoch, `0`: until lifted);
//! - `ssechat:{directory}:rooms`: hash, room -> slow mode (ms);
//! - `ssechat:{directory}:generation`: the change counter, `INCR`ed in the same `MULTI`
//!   as every write ([`bump_generation`]).
//!
//! Slow-mode turns are per room, `ssechat:{ROOM}:slow:SENDER`, with a TTL of the interval.

use std::collections::HashMap;
use std::time::Duration;

use super::conn::RedisConn;
use redis::{AsyncCommands, Pipeline, Script};

use crate::domain::{RoomName, Timestamp};
use crate::rules::{Ban, BanTarget, Directory, Perm, RoomPattern, RoomSettings, Rule, Subject};

const RULES: &str = "ssechat:{directory}:rules";
const BANS: &str = "ssechat:{directory}:bans";
const ROOMS: &str = "ssechat:{directory}:rooms";
const GENERATION: &str = "ssechat:{directory}:generation";

/// Removes every rule whose field starts with ARGV[1] (`SUBJECT\n`) and bumps the
/// generation, atomically. KEYS: rules, generation. Returns how many went.
const RESET_SUBJECT: &str = r#"
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], f)
    n = n + 1
  end
end
redis.call('INCR', KEYS[2])
return n
"#;

/// Takes a slow-mode turn: 0 if taken, else the milliseconds until the next. KEYS: the
/// sender's turn; ARGV: the interval (ms).
const SLOW_TURN: &str = r#"
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'NX') then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then return 1 end
return left
"#;

/// The one step every directory write adds to its `MULTI` (accounts' writes add it too).
pub fn bump_generation(pipe: &mut Pipeline) -> &mut Pipeline {
    pipe.incr(GENERATION, 1).ignore()
}

/// Moves the generation alone: after an accounts write (its keys live in another slot),
/// so every node looks again at its open streams.
pub async fn touch(conn: &RedisConn) -> redis::RedisResult<()> {
    conn.clone().incr(GENERATION, 1).await
}

/// Runs `pipe` with the generation bump as one `MULTI`; gives the first reply.
async fn write<T: redis::FromRedisValue>(conn: &RedisConn, pipe: &mut Pipeline) -> redis::RedisResult<T> {
    let (out,): (T,) = bump_generation(pipe.atomic()).query_async(&mut conn.clone()).await?;
    Ok(out)
}

pub async fn generation(conn: &RedisConn) -> redis::RedisResult<u64> {
    let value: Option<u64> = conn.clone().get(GENERATION).await?;
    Ok(value.unwrap_or(0))
}

pub async fn directory(conn: &RedisConn) -> Result<Directory, String> {
    type Hash = HashMap<String, String>;
    let (generation, rules, bans, rooms): (Option<u64>, Hash, Hash, Hash) = redis::pipe()
        .atomic()
        .get(GENERATION)
        .hgetall(RULES)
        .hgetall(BANS)
        .hgetall(ROOMS)
        .query_async(&mut conn.clone())
        .await
        .map_err(|e| e.to_string())?;
    let damaged = |what: &str, e: String| format!("damaged {what} in Redis: {e}");
    let rules = rules
        .iter()
        .map(|(field, perm)| {
            let (subject, pattern) = field.split_once('\n').ok_or("no pattern".to_owned())?;
            Ok(Rule {
                subject: Subject::parse(subject).map_err(|e| e.to_string())?,
                pattern: RoomPattern::parse(pattern).map_err(|e| e.to_string())?,
                perm: Perm::parse(perm).map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| damaged("rule", e))?;
    let bans = bans
        .iter()
        .map(|(field, until)| {
            let (target, room) = field.split_once('\n').ok_or("no room".to_owned())?;
            let until: i64 = until.parse().map_err(|_| "bad time".to_owned())?;
            Ok(Ban {
                target: BanTarget::parse(target).map_err(|e| e.to_string())?,
                room: (!room.is_empty())
                    .then(|| RoomName::parse(room))
                    .transpose()
                    .map_err(|e| e.to_string())?,
                until: (until != 0).then(|| Timestamp::from_millis(until).ok_or("bad time")).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| damaged("ban", e))?;
    let rooms = rooms
        .iter()
        .map(|(room, slow)| {
            let slow: u64 = slow.parse().map_err(|_| "bad duration".to_owned())?;
            let room = RoomName::parse(room).map_err(|e| e.to_string())?;
            Ok((room, RoomSettings { slow: Some(Duration::from_millis(slow)) }))
        })
        .collect::<Result<HashMap<_, _>, String>>()
        .map_err(|e| damaged("room setting", e))?;
    Ok(Directory { generation: generation.unwrap_or(0), rules, bans, rooms, names: Default::default() })
}

fn rule_field(subject: &Subject, pattern: &RoomPattern) -> String {
    format!("{subject}\n{pattern}")
}

fn ban_field(target: &BanTarget, room: Option<&RoomName>) -> String {
    format!("{target}\n{}", room.map_or("", RoomName::as_str))
}

pub async fn set_rule(conn: &RedisConn, rule: &Rule) -> redis::RedisResult<()> {
    let field = rule_field(&rule.subject, &rule.pattern);
    write::<u64>(conn, redis::pipe().hset(RULES, field, rule.perm.as_str())).await.map(|_| ())
}

pub async fn reset_rules(
    conn: &RedisConn,
    subject: &Subject,
    pattern: Option<&RoomPattern>,
) -> redis::RedisResult<u64> {
    match pattern {
        Some(pattern) => write(conn, redis::pipe().hdel(RULES, rule_field(subject, pattern))).await,
        None => {
            Script::new(RESET_SUBJECT)
                .key(RULES)
                .key(GENERATION)
                .arg(format!("{subject}\n"))
                .invoke_async(&mut conn.clone())
                .await
        }
    }
}

pub async fn add_ban(conn: &RedisConn, ban: &Ban) -> redis::RedisResult<()> {
    let until = ban.until.map_or(0, |t| t.millis());
    let field = ban_field(&ban.target, ban.room.as_ref());
    write::<u64>(conn, redis::pipe().hset(BANS, field, until)).await.map(|_| ())
}

pub async fn remove_ban(
    conn: &RedisConn,
    target: &BanTarget,
    room: Option<&RoomName>,
) -> redis::RedisResult<u64> {
    write(conn, redis::pipe().hdel(BANS, ban_field(target, room))).await
}

pub async fn set_room(conn: &RedisConn, room: &RoomName, settings: RoomSettings) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    match settings.slow {
        Some(slow) => pipe.hset(ROOMS, room.as_str(), slow.as_millis() as u64),
        None => pipe.hdel(ROOMS, room.as_str()),
    };
    write::<u64>(conn, &mut pipe).await.map(|_| ())
}

pub async fn slow_turn(
    conn: &RedisConn,
    room: &RoomName,
    sender: &str,
    every: Duration,
) -> redis::RedisResult<Option<Duration>> {
    let left: u64 = Script::new(SLOW_TURN)
        .key(format!("ssechat:{{{room}}}:slow:{sender}"))
        .arg(every.as_millis().max(1) as u64)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok((left > 0).then(|| Duration::from_millis(left)))
}
