//! A room's writes: the scripts that append to its log, take entries back and forget it.
//!
//! Every key a script touches carries the room's hash tag (`ssechat:{ROOM}:...`), so each
//! script runs atomically in one Redis Cluster slot, as on one Redis. The room index
//! (`ssechat:rooms`, its own slot) is written by a separate command after the script
//! ([`RoomScripts::note`]: `ZADD GT`, so racing updates never move a room back). A crash
//! between the two leaves the room out of the room list until its next message, or until
//! pruning sees it (which repairs the index from the room's own `:last`).
//!
//! Generic over the connection (`redis::aio::ConnectionLike`): a `ConnectionManager` on
//! one Redis, a `ClusterConnection` on a Cluster. Public for the Cluster test harness.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use super::follow;
use crate::domain::{Change, NewMessage, RoomName, TakeBack};

/// Every room with messages, scored by its last activity (ms): the room list reads it newest
/// first, `limit` entries, with one bounded ZREVRANGEBYSCORE.
pub const ROOMS: &str = "ssechat:rooms";

/// How long an idempotency key is remembered.
const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// [Replay a known idempotency key, or] next id, append, cap, note activity, publish,
/// remember the key: atomically. KEYS: seq, log, last, idempotency key. Returns
/// {replayed, payload, ms} (ms: 0 when replayed).
///
/// The id is written into the payload by hand: `cjson` prints numbers with 14 significant
/// digits, and ids have 16.
const APPEND: [&str; 3] = [
    r#"
if ARGV[6] == '1' then
  local prior = redis.call('GET', KEYS[4])
  if prior then return {1, prior, 0} end
end
local room, retain, channel, publish, target = ARGV[1], ARGV[4], ARGV[5], ARGV[9], nil
local user = nil
if ARGV[8] == '1' then user = true end
local function body(ms)
  return cjson.encode({room = room, author = ARGV[2], text = ARGV[3], time = ms, user = user})
end
"#,
    NEXT_ID_AND_LOG,
    r#"
if ARGV[6] == '1' then redis.call('SET', KEYS[4], payload, 'EX', tonumber(ARGV[7])) end
return {0, payload, ms}
"#,
];

/// The part every log entry shares: the room's next id, the entry (`body`, a JSON object
/// without its id) appended to the log, the log capped at `retain`, the room's last
/// activity noted in its `:last` key, the entry published. KEYS: seq, log, last; locals in:
/// room, retain, channel, publish (`PUBLISH`, or `SPUBLISH` on a Cluster), body (a function
/// of `ms`), target (a delete's or edit's, else
/// nil); out: payload, ms.
///
/// A room's first id follows Redis's clock (`first_id_base`: milliseconds × 1,000), so a
/// Redis that lost its data (no persistence, restarted) never gives an id again that it gave
/// before.
const NEXT_ID_AND_LOG: &str = r#"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', ms * 1000))
end
local id = redis.call('INCR', KEYS[1])
local head = '{"id":' .. string.format('%.0f', id) .. ','
if target then head = head .. '"target":' .. target .. ',' end
local payload = head .. string.sub(body(ms), 2)
redis.call('ZADD', KEYS[2], id, payload)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(retain)
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
redis.call('SET', KEYS[3], string.format('%.0f', ms))
redis.call(publish, channel, payload)
"#;

/// A delete or an edit of message ARGV[2], if the log holds it and nobody deleted it: the
/// message and the entries about it (found by their `"target":ID,` prefix, which no text
/// can contain unescaped) are folded to how it reads now, then the entry goes the way of
/// every entry. KEYS: seq, log, last; ARGV: room, target, kind (`delete` or `edit`), text,
/// retain, channel, publish. Returns {payload, ms}, or nil when there is no such message.
const TAKE_BACK: [&str; 3] = [
    r#"
local room, target, retain, channel, publish = ARGV[1], ARGV[2], ARGV[5], ARGV[6], ARGV[7]
local found = redis.call('ZRANGEBYSCORE', KEYS[2], target, '+inf')
if #found == 0 then return false end
local current = cjson.decode(found[1])
if current.kind or string.format('%.0f', current.id) ~= target then return false end
local needle = '"target":' .. target .. ','
for i = 2, #found do
  if string.find(found[i], needle, 1, true) then
    local entry = cjson.decode(found[i])
    if entry.kind == 'delete' then return false end
    current = entry
  end
end
local body
if ARGV[3] == 'delete' then
  body = function(ms) return cjson.encode({room = room, kind = 'delete', time = ms}) end
else
  body = function(ms)
    return cjson.encode({room = room, kind = 'edit', author = current.author, text = ARGV[4],
      time = current.time, edited = ms, user = current.user})
  end
end
"#,
    NEXT_ID_AND_LOG,
    "return {payload, ms}",
];

/// Step one of forgetting an idle room, on the room's slot: if its last activity (`:last`,
/// or ARGV[1], the index's score, for rooms written before `:last` existed) is older than
/// the cutoff ARGV[2], its log and `:last` go; its `seq` stays, so ids go on. KEYS: log,
/// last. Returns {forgotten, last}.
const FORGET_LOG: &str = r#"
local last = tonumber(redis.call('GET', KEYS[2]) or ARGV[1])
if last < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {1, last}
end
return {0, last}
"#;

/// Step two, on the index's slot: the room leaves the index if its score is still older
/// than the cutoff. An append between the steps has raised it (`ZADD GT`), so the room
/// stays; an append whose `ZADD` comes after puts it back. KEYS: rooms; ARGV: room, cutoff.
const FORGET_INDEX: &str = r#"
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if last and tonumber(last) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"#;

pub fn seq_key(room: &RoomName) -> String {
    format!("ssechat:{{{room}}}:seq")
}

pub fn log_key(room: &RoomName) -> String {
    format!("ssechat:{{{room}}}:log")
}

/// The room's last activity (ms), written by every append: what pruning trusts.
fn last_key(room: &RoomName) -> String {
    format!("ssechat:{{{room}}}:last")
}

/// Where the message sent under `key` in `room` is remembered (for `KEY_TTL`).
pub fn idempotency_key(room: &RoomName, key: &str) -> String {
    format!("ssechat:{{{room}}}:key:{key}")
}

/// What a script wrote: the entry as stored, and the Redis time (ms) it was written at.
pub struct Written {
    pub payload: Vec<u8>,
    pub ms: i64,
}

/// The room scripts, loaded once per store.
pub struct RoomScripts {
    append: Script,
    take_back: Script,
    forget_log: Script,
    forget_index: Script,
    /// How entries are published: `PUBLISH`, or `SPUBLISH` (sharded) on a Cluster.
    publish: &'static str,
}

impl Default for RoomScripts {
    /// Scripts that publish with a plain `PUBLISH`.
    fn default() -> Self {
        Self::new("PUBLISH")
    }
}

impl RoomScripts {
    /// Scripts that publish with `publish` (`PUBLISH` or `SPUBLISH`).
    pub fn new(publish: &'static str) -> Self {
        Self {
            append: Script::new(&APPEND.concat()),
            take_back: Script::new(&TAKE_BACK.concat()),
            forget_log: Script::new(FORGET_LOG),
            forget_index: Script::new(FORGET_INDEX),
            publish,
        }
    }

    /// Appends `new` (keeping `retain` entries): `Err(payload)` when its idempotency key
    /// was known (nothing written), else what was written. The room index is not touched:
    /// call [`Self::note`] after.
    pub async fn append<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        new: &NewMessage,
        retain: usize,
    ) -> RedisResult<Result<Written, Vec<u8>>> {
        let key = new.key.as_ref().map_or("", |k| k.as_str());
        let (replayed, payload, ms): (u8, Vec<u8>, i64) = self
            .append
            .key(seq_key(&new.room))
            .key(log_key(&new.room))
            .key(last_key(&new.room))
            .key(idempotency_key(&new.room, key))
            .arg(new.room.as_str())
            .arg(new.author.as_str())
            .arg(new.text.as_str())
            .arg(retain)
            .arg(follow::channel(&new.room))
            .arg(if new.key.is_some() { "1" } else { "0" })
            .arg(KEY_TTL.as_secs())
            .arg(if new.user { "1" } else { "0" })
            .arg(self.publish)
            .invoke_async(conn)
            .await?;
        Ok(if replayed == 1 { Err(payload) } else { Ok(Written { payload, ms }) })
    }

    /// A delete or edit of `change.target`; `None` if the log holds no such live message.
    /// The room index is not touched: call [`Self::note`] after.
    pub async fn take_back<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        change: &TakeBack,
        retain: usize,
    ) -> RedisResult<Option<Written>> {
        let (kind, text) = match &change.change {
            Change::Delete => ("delete", ""),
            Change::Edit(text) => ("edit", text.as_str()),
        };
        let written: Option<(Vec<u8>, i64)> = self
            .take_back
            .key(seq_key(&change.room))
            .key(log_key(&change.room))
            .key(last_key(&change.room))
            .arg(change.room.as_str())
            .arg(change.target)
            .arg(kind)
            .arg(text)
            .arg(retain)
            .arg(follow::channel(&change.room))
            .arg(self.publish)
            .invoke_async(conn)
            .await?;
        Ok(written.map(|(payload, ms)| Written { payload, ms }))
    }

    /// Moves `room` up the room index to `ms` (never down): the second half of a write.
    pub async fn note<C: ConnectionLike + Send>(conn: &mut C, room: &RoomName, ms: i64) -> RedisResult<()> {
        redis::cmd("ZADD").arg(ROOMS).arg("GT").arg(ms).arg(room.as_str()).exec_async(conn).await
    }

    /// Forgets `room` if its last activity is older than `cutoff` (ms), in two steps, one per
    /// slot (see [`FORGET_LOG`], [`FORGET_INDEX`]); `indexed` is its score in the index.
    /// A room found active has its index score repaired. Returns whether it was forgotten.
    pub async fn forget<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        room: &RoomName,
        indexed: i64,
        cutoff: i64,
    ) -> RedisResult<bool> {
        let (forgotten, last): (u8, i64) = self
            .forget_log
            .key(log_key(room))
            .key(last_key(room))
            .arg(indexed)
            .arg(cutoff)
            .invoke_async(conn)
            .await?;
        if forgotten == 0 {
            Self::note(conn, room, last).await?;
            return Ok(false);
        }
        let _: i64 = self.forget_index.key(ROOMS).arg(room.as_str()).arg(cutoff).invoke_async(conn).await?;
        Ok(true)
    }
}
