//! Redis Cluster's hash slots: which slot a key is in, and which primary serves which slots
//! (`CLUSTER SLOTS`), for the follower (`shards.rs`) and for waiting on replicas
//! (`replicas.rs`).

use std::ops::RangeInclusive;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use super::follow::channel;
use crate::domain::RoomName;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first `{`
/// and the next `}`, if not empty), else of the whole key, modulo 16384.
pub fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % SLOTS
}

/// The slot of `room`'s keys and channel (its hash tag).
pub fn slot_of(room: &RoomName) -> u16 {
    slot(&channel(room))
}

/// Which primary (`HOST:PORT`) serves which slots, as `CLUSTER SLOTS` says.
#[derive(Default, Debug, PartialEq)]
pub struct SlotMap(Vec<(u16, u16, String)>);

impl SlotMap {
    pub async fn read(conn: &mut impl ConnectionLike) -> RedisResult<Self> {
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        Self::parse(&reply).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "unexpected CLUSTER SLOTS reply"))
        })
    }

    /// Each range is `[start, end, [host, port, ...], replicas...]`.
    pub fn parse(reply: &Value) -> Option<Self> {
        let Value::Array(ranges) = reply else { return None };
        let range = |range: &Value| -> Option<(u16, u16, String)> {
            let Value::Array(fields) = range else { return None };
            let Some(Value::Array(primary)) = fields.get(2) else { return None };
            let host = text(primary.first()?)?;
            let port = number(primary.get(1)?)?;
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            Some((number(fields.first()?)?, number(fields.get(1)?)?, format!("{host}:{port}")))
        };
        ranges.iter().map(range).collect::<Option<Vec<_>>>().map(Self)
    }

    /// The primary serving `channel`'s slot.
    pub fn owner(&self, channel: &str) -> Option<&str> {
        self.serving(slot(channel))
    }

    fn serving(&self, slot: u16) -> Option<&str> {
        self.0.iter().find(|(start, end, _)| (*start..=*end).contains(&slot)).map(|(.., addr)| addr.as_str())
    }

    /// Every range the primary serving `slot` serves.
    pub fn ranges_with(&self, slot: u16) -> Vec<RangeInclusive<u16>> {
        let Some(owner) = self.serving(slot) else { return Vec::new() };
        self.0.iter().filter(|(.., addr)| addr == owner).map(|(start, end, _)| *start..=*end).collect()
    }
}

pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u16> {
    match value {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // As `CLUSTER KEYSLOT` answers.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{foo}:anything"), 12182);
        assert_eq!(slot("ssechat:{foo}:ch"), 12182);
        assert_eq!(slot("{}foo"), slot("{}foo"), "an empty tag hashes the whole key");
        assert_ne!(slot("{}foo"), slot("foo"));
    }

    #[test]
    fn a_rooms_slot_is_the_one_redis_rs_routes_its_keys_to() {
        use redis::cluster_routing::{Route, SlotAddr};
        for name in ["general", "r0", "r1", "a-long_room-name-0123456789"] {
            let room = RoomName::parse(name).unwrap();
            let key = super::super::room::log_key(&room);
            assert_eq!(Route::new(slot_of(&room), SlotAddr::Master), Route::with_key(key, SlotAddr::Master));
        }
    }

    #[test]
    fn every_range_of_the_slots_primary_is_found() {
        let node = |port| Value::Array(vec![Value::BulkString(b"127.0.0.1".to_vec()), Value::Int(port)]);
        let entry = |first, last, port| {
            Value::Array(vec![Value::Int(first), Value::Int(last), node(port), node(port + 1)])
        };
        let reply = Value::Array(vec![entry(0, 99, 7000), entry(100, 199, 7002), entry(200, 16383, 7000)]);
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.ranges_with(150), [100..=199]);
        assert_eq!(map.ranges_with(5000), [0..=99, 200..=16383]);
        assert!(SlotMap::default().ranges_with(5).is_empty());
    }

    #[test]
    fn the_slot_map_names_each_ranges_primary() {
        let node = |host: &str, port| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |start, end, primary, replica| {
            Value::Array(vec![Value::Int(start), Value::Int(end), primary, replica])
        };
        let reply = Value::Array(vec![
            range(0, 12181, node("127.0.0.1", 7000), node("127.0.0.1", 7003)),
            range(12182, 16383, node("::1", 7001), node("::1", 7004)),
        ]);
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.owner("ssechat:{foo}:ch"), Some("[::1]:7001"));
        assert_eq!(map.owner("bar"), Some("127.0.0.1:7000"));
        assert_eq!(SlotMap::parse(&Value::Int(1)), None);
    }
}
