//! The Redis store's accounts, under the hash tag `{accounts}` (one Cluster slot, so each
//! operation, scripts included, touches one slot):
//! - `ssechat:{accounts}:users`: hash, skeleton of the name → the user as JSON;
//! - `ssechat:{accounts}:tokens`: hash, SHA-256 of the token → the token as JSON;
//! - `ssechat:{accounts}:tokens-of:SKELETON`: set of the hashes of a user's tokens;
//! - `ssechat:{accounts}:session:HASH`: hash `owner`, `epoch`, `expires`, expiring with
//!   the session (`PEXPIREAT`).

use std::collections::HashMap;

use redis::{AsyncCommands, Script};

use super::RedisStore;
use crate::domain::{Author, Timestamp};
use crate::domain::{Session, Token, User, skeleton};
use crate::store::StoreError;

const USERS: &str = "ssechat:{accounts}:users";
const TOKENS: &str = "ssechat:{accounts}:tokens";

fn tokens_of(name: &Author) -> String {
    format!("ssechat:{{accounts}}:tokens-of:{}", skeleton(name.as_str()))
}

fn session_key(hash: &str) -> String {
    format!("ssechat:{{accounts}}:session:{hash}")
}

/// Replaces a user's record only if the user still exists. KEYS: users. ARGV: skeleton, JSON.
const REPLACE_USER: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// Deletes a user and their tokens. KEYS: users, tokens, the user's token set. ARGV: skeleton.
const DELETE_USER: &str = r#"
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('HDEL', KEYS[2], hash) end
redis.call('DEL', KEYS[3])
return gone
"#;

/// Moves a session's expiry, if it still exists. KEYS: the session. ARGV: expiry (ms).
const EXTEND_SESSION: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'expires', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"#;

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Unavailable(format!("damaged account record in Redis: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("account records serialize")
}

impl RedisStore {
    pub(super) async fn add_user_here(&self, user: &User) -> Result<Option<Author>, StoreError> {
        let mut conn = self.conn.clone();
        let key = skeleton(user.name.as_str());
        let added: bool = conn.hset_nx(USERS, &key, encode(user)).await.map_err(|e| self.unavailable(e))?;
        if added {
            self.tell_nodes().await?;
            return Ok(None);
        }
        Ok(self.user_here(&key).await?.map(|u| u.name))
    }

    pub(super) async fn user_here(&self, skeleton: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.hget(USERS, skeleton).await.map_err(|e| self.unavailable(e))?;
        json.map(|j| decode(&j)).transpose()
    }

    pub(super) async fn users_here(&self) -> Result<Vec<User>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(USERS).await.map_err(|e| self.unavailable(e))?;
        let mut users = all.values().map(|j| decode::<User>(j)).collect::<Result<Vec<_>, _>>()?;
        users.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(users)
    }

    pub(super) async fn set_password_here(
        &self,
        name: &Author,
        hash: &str,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let key = skeleton(name.as_str());
        let Some(user) = self.user_here(&key).await? else { return Ok(false) };
        let user = User { password: hash.to_owned(), epoch, ..user };
        let mut conn = self.conn.clone();
        let replaced: i64 = Script::new(REPLACE_USER)
            .key(USERS)
            .arg(&key)
            .arg(encode(&user))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        self.tell_nodes().await?;
        Ok(replaced == 1)
    }

    /// Every node looks again at its open streams: a user deleted, or whose password changed,
    /// is signed out there too. The write is done: a failure here says so.
    async fn tell_nodes(&self) -> Result<(), StoreError> {
        super::policy::touch(&self.conn).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "the change is stored, but the nodes could not be told to end open streams ({e}); \
                 they end at the next change"
            ))
        })
    }

    pub(super) async fn delete_user_here(&self, name: &Author) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let gone: i64 = Script::new(DELETE_USER)
            .key(USERS)
            .key(TOKENS)
            .key(tokens_of(name))
            .arg(skeleton(name.as_str()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        self.tell_nodes().await?;
        Ok(gone == 1)
    }

    pub(super) async fn add_token_here(&self, token: &Token) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset(TOKENS, &token.hash, encode(token))
            .sadd(tokens_of(&token.owner), &token.hash)
            .exec_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))
    }

    pub(super) async fn token_here(&self, hash: &str) -> Result<Option<Token>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.hget(TOKENS, hash).await.map_err(|e| self.unavailable(e))?;
        json.map(|j| decode(&j)).transpose()
    }

    pub(super) async fn tokens_here(&self, owner: &Author) -> Result<Vec<Token>, StoreError> {
        let mut conn = self.conn.clone();
        let hashes: Vec<String> = conn.smembers(tokens_of(owner)).await.map_err(|e| self.unavailable(e))?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(TOKENS)
            .arg(&hashes)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut tokens = found.iter().flatten().map(|j| decode::<Token>(j)).collect::<Result<Vec<_>, _>>()?;
        tokens.sort_by_key(|t| t.created.millis());
        Ok(tokens)
    }

    pub(super) async fn delete_token_here(&self, hash: &str) -> Result<bool, StoreError> {
        let Some(token) = self.token_here(hash).await? else { return Ok(false) };
        let mut conn = self.conn.clone();
        let (gone, _): (i64, i64) = redis::pipe()
            .atomic()
            .hdel(TOKENS, hash)
            .srem(tokens_of(&token.owner), hash)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(gone == 1)
    }

    pub(super) async fn add_session_here(&self, session: &Session) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = session_key(&session.hash);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("owner", session.owner.as_str().to_owned()),
                    ("epoch", session.epoch.to_string()),
                    ("expires", session.expires.millis().to_string()),
                ],
            )
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(session.expires.millis())
            .exec_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))
    }

    pub(super) async fn session_here(&self, hash: &str) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> =
            conn.hgetall(session_key(hash)).await.map_err(|e| self.unavailable(e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let damaged = || StoreError::Unavailable("damaged session in Redis".to_owned());
        let field = |name: &str| fields.get(name).ok_or_else(damaged);
        let session = Session {
            hash: hash.to_owned(),
            owner: Author::read_back(field("owner")?).map_err(|_| damaged())?,
            epoch: field("epoch")?.parse().map_err(|_| damaged())?,
            expires: field("expires")?.parse().ok().and_then(Timestamp::from_millis).ok_or_else(damaged)?,
        };
        Ok((session.expires.millis() > Timestamp::now().millis()).then_some(session))
    }

    pub(super) async fn extend_session_here(&self, hash: &str, expires: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = Script::new(EXTEND_SESSION)
            .key(session_key(hash))
            .arg(expires.millis())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    pub(super) async fn delete_session_here(&self, hash: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(session_key(hash)).await.map_err(|e| self.unavailable(e))?;
        Ok(())
    }
}
