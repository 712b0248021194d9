//! A room's writes: the scripts that append to its log, take entries back and forget it.
//!
//! Every key a script touches carries the room's hash tag (`ssechat:{ROOM}:...`), so each
//! script runs atomically in one Redis Cluster slot, as on one Redis. The room index
//! (`ssechat:rooms`, its own slot) is written by a separate command after the script
//! ([`RoomScripts::note`]: `ZADD GT`, so racing updates never move a room back). A crash
//! between the two leaves the room out of the room list until its next message, or until
//! pruning sees it (which repairs the index from the room's own `:last`).
//!
//! A write run twice stores once when it has a key: the client's, or on a Cluster its
//! [`Attempt`]'s token, since the cluster connection re-sends a request after an IO error.
//! The second run finds the key and gives back the first run's entry, and by the token it
//! knows whether that was itself ([`Outcome::Resent`]) or a client's earlier send
//! ([`Outcome::Replayed`]). That holds for take-backs too (a delete run twice gives back its
//! entry, not "no such message"; an edit run twice logs one edit).
//!
//! Generic over the connection (`redis::aio::ConnectionLike`): a `ConnectionManager` on
//! one Redis, a `ClusterConnection` on a Cluster. Public for the Cluster test harness.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisResult, Script, ServerError, ServerErrorKind, ToRedisArgs, Value};

use super::follow;
use crate::domain::{Change, IdempotencyKey, NewMessage, RoomName, TakeBack};

/// Every room with messages, scored by its last activity (ms): the room list reads it newest
/// first, `limit` entries, with one bounded ZREVRANGEBYSCORE.
pub const ROOMS: &str = "ssechat:rooms";

/// How long a client's idempotency key is remembered.
const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a write's attempt is remembered when it has no client key (see [`Attempt`]):
/// far longer than redis-rs's retries of one request take (two tries after the first, each
/// at most the store's command timeout), far shorter than a client's key.
pub const ATTEMPT_TTL: Duration = Duration::from_secs(60);

/// A write's first lines: if its key (KEYS[4]; the local `remember`, seconds, is 0 when
/// there is none) is known, the entry written under it comes back and nothing is written.
/// Returns {1, payload, 0}.
const REPLAY: &str = r#"
if remember > 0 then
  local prior = redis.call('GET', KEYS[4])
  if prior then return {1, prior, 0} end
end
"#;

/// A write's last lines: the entry is remembered under its key, after the write's attempt
/// token (the local `attempt`, "" on one Redis). Returns {0, payload, ms}.
const REMEMBER: &str = r#"
if remember > 0 then redis.call('SET', KEYS[4], attempt .. payload, 'EX', remember) end
return {0, payload, ms}
"#;

/// [Replay a known idempotency key, or] next id, append, cap, note activity, publish,
/// remember the key: atomically. KEYS: seq, log, last, idempotency key. ARGV: room,
/// author, text, retain, channel, seconds to remember the key (0: no key), user ('1' or
/// '0'), attempt token, publish command. Returns {replayed, payload, ms} (ms: 0 when replayed; a replayed
/// payload comes after the attempt token that wrote it).
///
/// The id is written into the payload by hand: `cjson` prints numbers with 14 significant
/// digits, and ids have 16.
const APPEND: [&str; 5] = [
    "local remember, attempt = tonumber(ARGV[6]), ARGV[8]",
    REPLAY,
    r#"
local room, retain, channel, publish, target = ARGV[1], ARGV[4], ARGV[5], ARGV[9], nil
local user = nil
if ARGV[7] == '1' then user = true end
local function body(ms)
  return cjson.encode({room = room, author = ARGV[2], text = ARGV[3], time = ms, user = user})
end
"#,
    NEXT_ID_AND_LOG,
    REMEMBER,
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
/// every entry. KEYS: seq, log, last, key (see [`Remembered`]); ARGV: room, target, kind
/// (`delete` or `edit`), text, retain, channel, seconds to remember the key (0: no key),
/// attempt token, publish command.
/// Returns {replayed, payload, ms}, or nil when there is no such message. A known key
/// replays before the message is looked for: a delete run twice gives back its entry.
const TAKE_BACK: [&str; 5] = [
    "local remember, attempt = tonumber(ARGV[7]), ARGV[8]",
    REPLAY,
    r#"
local room, target, retain, channel, publish = ARGV[1], ARGV[2], ARGV[5], ARGV[6], ARGV[9]
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
    REMEMBER,
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

/// Where the entry written under `key` in `room` is remembered (see [`remembered`]).
pub fn idempotency_key(room: &RoomName, key: &str) -> String {
    format!("ssechat:{{{room}}}:key:{key}")
}

/// What a script wrote: the entry as stored, and the Redis time (ms) it was written at.
pub struct Written {
    pub payload: Vec<u8>,
    pub ms: i64,
}

/// What a write script did.
pub enum Outcome {
    /// It wrote this entry.
    Wrote(Written),
    /// This very write had run before (the same [`Attempt`], sent twice on the way): its
    /// entry, written then, and nothing now.
    Resent(Vec<u8>),
    /// Its client's key was known: the entry an earlier send wrote, and nothing now.
    Replayed(Vec<u8>),
}

impl Outcome {
    /// What was written now, if anything.
    pub fn written(self) -> Option<Written> {
        match self {
            Self::Wrote(written) => Some(written),
            Self::Resent(_) | Self::Replayed(_) => None,
        }
    }
}

/// One write's own token, 32 hex digits, made on a Redis Cluster, whose connection sends a
/// request again after an IO error, so a write script whose reply was lost runs twice. The
/// script stores it with the entry it remembers; a second run that finds its own token knows
/// it is the same write, not a client's retry. A write without a client key is remembered
/// under its token, for [`ATTEMPT_TTL`].
pub struct Attempt(IdempotencyKey);

impl Attempt {
    pub fn new() -> Self {
        Self(IdempotencyKey::random())
    }

    /// An attempt with a token of the caller's, for tests that run one attempt twice.
    pub fn with_token(token: IdempotencyKey) -> Self {
        Self(token)
    }
}

impl Default for Attempt {
    fn default() -> Self {
        Self::new()
    }
}

/// The entry in what a key remembers, and the token of the attempt that wrote it: a
/// remembered value is `TOKEN{...}`, or `{...}` on one Redis (and before tokens existed).
pub fn remembered(value: &[u8]) -> (&[u8], &[u8]) {
    let token = value.iter().position(|&b| b == b'{').unwrap_or(0);
    value.split_at(token)
}

/// The Redis key a write in `room` is remembered under, and its seconds to live (the empty
/// key and 0 when none: the script ignores it, but it keeps the script on the room's slot).
fn remembering(room: &RoomName, key: Option<&IdempotencyKey>, ttl: Duration) -> (String, u64) {
    match key {
        Some(key) => (idempotency_key(room, key.as_str()), ttl.as_secs()),
        None => (idempotency_key(room, ""), 0),
    }
}

/// One run of a write script, built by hand (`EVALSHA sha 4 KEYS... ARGV...`) instead of
/// with `Script::invoke_async`, so that a command can follow it in the same pipeline, and
/// so on the same connection (the Cluster's `WAIT`): redis-rs 1.8.1 has no script
/// invocation in a pipeline.
pub struct Call<'a> {
    script: &'a Script,
    evalsha: Cmd,
    attempt: Option<&'a Attempt>,
}

impl<'a> Call<'a> {
    fn new(script: &'a Script, keys: [String; 4], attempt: Option<&'a Attempt>) -> Self {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(script.get_hash()).arg(keys.len()).arg(&keys);
        Self { script, evalsha, attempt }
    }

    fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.evalsha.arg(arg);
        self
    }

    /// Runs the script, then `after` right behind it; returns what the script did (`None`:
    /// nothing to do, a take-back of no such message) and `after`'s reply, which may be an
    /// error reply. A Redis that doesn't know the script says so without running it: it is
    /// loaded and the pipeline sent again, as `Script::invoke_async` does.
    pub async fn run<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        after: Option<&Cmd>,
    ) -> RedisResult<(Option<Outcome>, Option<Value>)> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(self.evalsha.clone());
        if let Some(after) = after {
            pipe.add_command(after.clone());
        }
        let mut replies: Vec<Value> = pipe.query_async(conn).await?;
        let unknown = |e: &ServerError| e.kind() == Some(ServerErrorKind::NoScript);
        if matches!(replies.first(), Some(Value::ServerError(e)) if unknown(e)) {
            self.script.load_async(conn).await?;
            replies = pipe.query_async(conn).await?;
        }
        let after = after.and_then(|_| replies.pop());
        let reply = replies.pop().ok_or_else(|| std::io::Error::other("no reply to a script"))?;
        let answer: Option<(u8, Vec<u8>, i64)> = redis::from_redis_value(reply)?;
        Ok((answer.map(|answer| self.outcome(answer)), after))
    }

    /// The script's answer, {replayed, payload, ms}.
    fn outcome(&self, (replayed, payload, ms): (u8, Vec<u8>, i64)) -> Outcome {
        if replayed == 0 {
            return Outcome::Wrote(Written { payload, ms });
        }
        let (token, entry) = remembered(&payload);
        let mine = self.attempt.is_some_and(|a| a.0.as_str().as_bytes() == token);
        if mine { Outcome::Resent(entry.to_vec()) } else { Outcome::Replayed(entry.to_vec()) }
    }
}

/// What the scripts store before a remembered entry: the attempt's token, or nothing.
fn token(attempt: Option<&Attempt>) -> &str {
    attempt.map_or("", |a| a.0.as_str())
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

    /// Appends `new` (keeping `retain` entries), remembered under its own key, or else for
    /// a short while under its `attempt`'s token, if any. The room index is not touched:
    /// call [`Self::note`] after.
    pub fn append<'a>(&'a self, new: &NewMessage, retain: usize, attempt: Option<&'a Attempt>) -> Call<'a> {
        let (key, ttl) = match &new.key {
            Some(key) => remembering(&new.room, Some(key), KEY_TTL),
            None => remembering(&new.room, attempt.map(|a| &a.0), ATTEMPT_TTL),
        };
        let keys = [seq_key(&new.room), log_key(&new.room), last_key(&new.room), key];
        Call::new(&self.append, keys, attempt)
            .arg(new.room.as_str())
            .arg(new.author.as_str())
            .arg(new.text.as_str())
            .arg(retain)
            .arg(follow::channel(&new.room))
            .arg(ttl)
            .arg(if new.user { "1" } else { "0" })
            .arg(token(attempt))
            .arg(self.publish)
    }

    /// A delete or edit of `change.target`, remembered for a short while under its
    /// `attempt`'s token, if any; it does nothing (`None`) if the log holds no such live
    /// message. The room index is not touched: call [`Self::note`] after.
    pub fn take_back<'a>(
        &'a self,
        change: &TakeBack,
        retain: usize,
        attempt: Option<&'a Attempt>,
    ) -> Call<'a> {
        let (kind, text) = match &change.change {
            Change::Delete => ("delete", ""),
            Change::Edit(text) => ("edit", text.as_str()),
        };
        let (key, ttl) = remembering(&change.room, attempt.map(|a| &a.0), ATTEMPT_TTL);
        let keys = [seq_key(&change.room), log_key(&change.room), last_key(&change.room), key];
        Call::new(&self.take_back, keys, attempt)
            .arg(change.room.as_str())
            .arg(change.target)
            .arg(kind)
            .arg(text)
            .arg(retain)
            .arg(follow::channel(&change.room))
            .arg(ttl)
            .arg(token(attempt))
            .arg(self.publish)
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
