//! The Redis session store: lets several Tessera nodes share sessions, replay markers and counters.
//!
//! Keys, all under the configured prefix (e.g. `tessera:`):
//!
//! - `{prefix}session:{key}`: a hash per session, `key` being the hex SHA-256 of the session id
//!   (never the id). Fields: `session` (JSON of [`Session`]; its `sp_sessions` and `last_seen` are
//!   kept in the next fields instead), `sps` (JSON array of [`SpSession`]), `last_seen` (unix s),
//!   `user_id`, `idle_ms`, `deadline_ms` (absolute deadline, unix ms on the Redis clock).
//!   Its TTL is min(idle, deadline - now), renewed by every touch.
//! - `{prefix}user-sessions:{user_id}`: a set of the user's session keys. It expires with the
//!   longest absolute deadline among them; members whose session expired are pruned on listing.
//! - `{prefix}once:{namespace}:{sha256(key)}`: replay markers (`SET NX PX`).
//! - `{prefix}counter:{sha256(key)}`: windowed counters.
//!
//! Every multi-step operation is one Lua script, so it is atomic and all nodes agree on time: the
//! scripts read the Redis clock (`TIME`), never a node's clock. Scripts that follow a session to
//! its user index build that key inside the script, so Tessera needs a standalone Redis (or one
//! behind Sentinel), not Redis Cluster.
//!
//! Outages: the [`ConnectionManager`] reconnects by itself in the background. Each call is bounded
//! by [`OPERATION_TIMEOUT`] and fails with [`Error::Unavailable`] while Redis is away; once Redis is
//! back, calls succeed again (the first call after a failed reconnect may still fail while it
//! starts the next attempt).

use std::fmt;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script};

use super::{
    check_namespace, duration_ms, hashed, Error, Session, SessionId, SessionKey, SessionStore,
    SessionSummary, SpSession,
};

/// How long one TCP connection attempt may take: a black-holed Redis fails fast.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// How long Redis may take to answer one command before the call fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Upper bound for a whole store call (a script call can take a NOSCRIPT round trip too). Past it
/// the call fails with [`Error::Unavailable`]; any reconnect attempt goes on in the background.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bound for [`RedisStore::connect`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Retries within one reconnect: none. The redis crate's backoff waits at least 1 s (plus jitter)
/// before a retry, which every caller waiting on the reconnect would sit through. With no retry a
/// reconnect is one attempt (refused at once, or [`CONNECTION_TIMEOUT`]), and the next call after
/// a failed one starts a fresh attempt: calls fail fast while Redis is down and find it again
/// within a call or two once it is back.
const RECONNECT_RETRIES: usize = 0;

/// Error code our scripts reply with when a session record lacks a field.
const CORRUPT_CODE: &str = "TESSERA_CORRUPT";

/// Lua shared by the session scripts: the Redis clock, and loading the live record at KEYS[1].
macro_rules! lua_prelude {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format('%.0f', x) end
-- 'live', fields, idle_ms, remaining_ms | 'gone' | 'corrupt'
local function load_live()
  local f = redis.call('HMGET', KEYS[1], 'session', 'sps', 'idle_ms', 'deadline_ms', 'user_id')
  if not f[1] then return 'gone' end
  local idle = tonumber(f[3])
  local deadline = tonumber(f[4])
  if not (f[2] and f[5] and idle and deadline) then return 'corrupt' end
  local remaining = deadline - now
  if remaining <= 0 then
    redis.call('DEL', KEYS[1])
    return 'gone'
  end
  return 'live', f, idle, remaining
end
-- Records a use: last_seen = now; TTL = min(idle, time left before the absolute deadline).
local function touch(idle, remaining)
  local seen = int(math.floor(now / 1000))
  redis.call('HSET', KEYS[1], 'last_seen', seen)
  redis.call('PEXPIRE', KEYS[1], int(math.min(idle, remaining)))
  return seen
end
local CORRUPT = 'TESSERA_CORRUPT session record lacks sps, user_id, idle_ms or deadline_ms'
"#
    };
}

/// KEYS: session, user index. ARGV: session JSON, sps JSON, user id, idle ms, absolute ms, member.
/// Returns 1, or 0 if the key is taken (a 2^-256 collision: the caller draws another id).
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_prelude!(),
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local idle = tonumber(ARGV[4])
local absolute = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'sps', ARGV[2], 'user_id', ARGV[3],
  'idle_ms', ARGV[4], 'deadline_ms', int(now + absolute), 'last_seen', int(math.floor(now / 1000)))
redis.call('PEXPIRE', KEYS[1], int(math.min(idle, absolute)))
redis.call('SADD', KEYS[2], ARGV[6])
if redis.call('PTTL', KEYS[2]) < absolute then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return 1
"#
    ))
});

/// KEYS: session. Returns {session JSON, sps JSON, last_seen} after touching, or nil.
static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_prelude!(),
        r#"
local state, f, idle, remaining = load_live()
if state == 'corrupt' then return redis.error_reply(CORRUPT) end
if state == 'gone' then return false end
local seen = touch(idle, remaining)
return {f[1], f[2], seen}
"#
    ))
});

/// KEYS: session. ARGV: session JSON, sps JSON, user id. Returns 1 updated, 0 gone, -1 other user.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_prelude!(),
        r#"
local state, f, idle, remaining = load_live()
if state == 'corrupt' then return redis.error_reply(CORRUPT) end
if state == 'gone' then return 0 end
if f[5] ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'sps', ARGV[2])
touch(idle, remaining)
return 1
"#
    ))
});

/// KEYS: session. ARGV: SpSession JSON. Returns 1 (appended or already there), 0 gone.
///
/// The entry is appended to the JSON text without decoding it (Lua's cjson would round large
/// integers). The duplicate check is a plain substring search, which is exact: an entry's JSON
/// starts with `{"sp_entity_id":"` and ends with `"}`, and inside a JSON string every `"` is
/// escaped, so a match can only be a whole, identical entry.
static ADD_SP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_prelude!(),
        r#"
local state, f, idle, remaining = load_live()
if state == 'corrupt' then return redis.error_reply(CORRUPT) end
if state == 'gone' then return 0 end
local sps = f[2]
if not string.find(sps, ARGV[1], 1, true) then
  if sps == '[]' then
    sps = '[' .. ARGV[1] .. ']'
  else
    sps = string.sub(sps, 1, -2) .. ',' .. ARGV[1] .. ']'
  end
  redis.call('HSET', KEYS[1], 'sps', sps)
end
touch(idle, remaining)
return 1
"#
    ))
});

/// KEYS: session. ARGV: user index prefix, member, required user id ('' for any).
/// Returns 1 if a live session was removed, else 0.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'user_id', 'deadline_ms')
if not f[1] then return 0 end
if ARGV[3] ~= '' and f[1] ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. f[1], ARGV[2])
local deadline = tonumber(f[2])
if deadline and deadline <= now then return 0 end
return 1
"#,
    )
});

/// KEYS: user index. ARGV: session key prefix. Returns a flat list of
/// {member, session JSON, sps JSON, last_seen} for each live session; prunes dead members.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', ARGV[1] .. m, 'session', 'sps', 'last_seen', 'deadline_ms')
  local deadline = tonumber(f[4])
  if not f[1] then
    redis.call('SREM', KEYS[1], m)
  elseif not (f[2] and f[3] and deadline) then
    return redis.error_reply('TESSERA_CORRUPT session record lacks sps, last_seen or deadline_ms')
  elseif deadline > now then
    table.insert(out, m)
    table.insert(out, f[1])
    table.insert(out, f[2])
    table.insert(out, f[3])
  end
end
return out
"#,
    )
});

/// KEYS: user index. ARGV: session key prefix. Deletes every session of the user and the index;
/// returns how many sessions existed.
static DELETE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. m)
end
redis.call('DEL', KEYS[1])
return n
"#,
    )
});

/// KEYS: counter. ARGV: window ms. INCR, and start the window if the counter has none.
static INCR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#,
    )
});

/// A session store in Redis, shared by every node that uses the same URL and prefix.
///
/// Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    /// The shared, self-reconnecting connection.
    conn: ConnectionManager,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`, or `rediss://` with TLS if the
    /// redis crate was built with it) and keeps every key under `prefix`.
    ///
    /// Fails with [`Error::InvalidConfig`] for a bad URL and [`Error::Unavailable`] if Redis cannot
    /// be reached within a few seconds. Once built, the store survives later outages.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        // Never echo the URL: it may hold a password.
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidConfig(format!("Redis URL: {}", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECTION_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(RECONNECT_RETRIES);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| Error::Unavailable("timed out connecting to Redis".to_owned()))?
        .map_err(classify)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// The key prefix this store uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a session record. Public so tests and operators can find it.
    pub fn session_redis_key(&self, key: &SessionKey) -> String {
        format!("{}session:{}", self.prefix, key.as_str())
    }

    /// The Redis key of a temporary value; the key is hashed like every other caller-chosen key.
    fn temp_key(&self, namespace: &str, key: &str) -> String {
        format!("{}temp:{namespace}:{}", self.prefix, hashed(key))
    }

    /// The prefix of the per-user index keys.
    fn user_index_prefix(&self) -> String {
        format!("{}user-sessions:", self.prefix)
    }

    /// The Redis key of a user's session index.
    fn user_index_key(&self, user_id: i64) -> String {
        format!("{}{user_id}", self.user_index_prefix())
    }

    /// The prefix of session record keys (the scripts append the member).
    fn session_key_prefix(&self) -> String {
        format!("{}session:", self.prefix)
    }

    /// Runs one Redis call within [`OPERATION_TIMEOUT`] and maps its error.
    async fn run<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T, Error> {
        match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(Error::Unavailable(format!(
                "Redis did not answer within {OPERATION_TIMEOUT:?}"
            ))),
        }
    }

    /// Runs [`DELETE`] for a session key, optionally only if it belongs to `owner`.
    async fn delete_key(&self, key: &SessionKey, owner: Option<i64>) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let mut call = DELETE.prepare_invoke();
        call.key(self.session_redis_key(key))
            .arg(self.user_index_prefix())
            .arg(key.as_str())
            .arg(owner.map(|u| u.to_string()).unwrap_or_default());
        let removed: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(removed == 1)
    }
}

/// Sorts a Redis failure into outage (retry later), corrupt data, or a refused command.
fn classify(e: RedisError) -> Error {
    if e.code() == Some(CORRUPT_CODE) {
        return Error::Corrupt(e.detail().unwrap_or("session record").to_owned());
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Error::Unavailable(e.to_string());
    }
    match e.kind() {
        ErrorKind::BusyLoadingError
        | ErrorKind::TryAgain
        | ErrorKind::MasterDown
        | ErrorKind::ClusterDown
        | ErrorKind::ReadOnly => Error::Unavailable(e.to_string()),
        ErrorKind::TypeError => Error::Corrupt(e.to_string()),
        _ => Error::Backend(e.to_string()),
    }
}

/// Splits a session into the `session` and `sps` JSON fields of its record.
fn encode(session: &Session) -> Result<(String, String), Error> {
    let mut head = session.clone();
    let sps = std::mem::take(&mut head.sp_sessions);
    let head = serde_json::to_string(&head).map_err(|e| Error::Corrupt(e.to_string()))?;
    let sps = serde_json::to_string(&sps).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok((head, sps))
}

/// Rebuilds a session from the `session`, `sps` and `last_seen` fields of its record.
fn decode(head: &str, sps: &str, last_seen: &str) -> Result<Session, Error> {
    let mut session: Session =
        serde_json::from_str(head).map_err(|e| Error::Corrupt(format!("session JSON: {e}")))?;
    session.sp_sessions =
        serde_json::from_str(sps).map_err(|e| Error::Corrupt(format!("sps JSON: {e}")))?;
    session.last_seen = last_seen
        .parse()
        .map_err(|e| Error::Corrupt(format!("last_seen {last_seen:?}: {e}")))?;
    Ok(session)
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(
        &self,
        session: &Session,
        idle: Duration,
        absolute: Duration,
    ) -> Result<SessionId, Error> {
        let idle_ms = duration_ms("idle", idle)?;
        let absolute_ms = duration_ms("absolute", absolute)?;
        let (head, sps) = encode(session)?;
        let mut conn = self.conn.clone();
        // A fresh 256-bit id never collides in practice; the loop only guards the script's
        // refusal to overwrite, so a collision could never hand one user another's session.
        loop {
            let id = SessionId::generate()?;
            let key = id.key();
            let mut call = CREATE.prepare_invoke();
            call.key(self.session_redis_key(&key))
                .key(self.user_index_key(session.user_id))
                .arg(&head)
                .arg(&sps)
                .arg(session.user_id)
                .arg(idle_ms)
                .arg(absolute_ms)
                .arg(key.as_str());
            let created: i64 = self.run(call.invoke_async(&mut conn)).await?;
            if created == 1 {
                return Ok(id);
            }
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error> {
        let mut conn = self.conn.clone();
        let mut call = GET.prepare_invoke();
        call.key(self.session_redis_key(&id.key()));
        let fields: Option<Vec<String>> = self.run(call.invoke_async(&mut conn)).await?;
        match fields.as_deref() {
            None => Ok(None),
            Some([head, sps, last_seen]) => decode(head, sps, last_seen).map(Some),
            Some(other) => Err(Error::Corrupt(format!(
                "get returned {} fields, expected 3",
                other.len()
            ))),
        }
    }

    async fn update(&self, id: &SessionId, session: &Session) -> Result<bool, Error> {
        let (head, sps) = encode(session)?;
        let mut conn = self.conn.clone();
        let mut call = UPDATE.prepare_invoke();
        call.key(self.session_redis_key(&id.key()))
            .arg(head)
            .arg(sps)
            .arg(session.user_id);
        let outcome: i64 = self.run(call.invoke_async(&mut conn)).await?;
        match outcome {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(Error::UserChanged),
        }
    }

    async fn add_sp_session(&self, id: &SessionId, sp: &SpSession) -> Result<bool, Error> {
        let entry = serde_json::to_string(sp).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let mut call = ADD_SP.prepare_invoke();
        call.key(self.session_redis_key(&id.key())).arg(entry);
        let outcome: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(outcome == 1)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, Error> {
        self.delete_key(&id.key(), None).await
    }

    async fn delete_for_user(&self, user_id: i64, key: &SessionKey) -> Result<bool, Error> {
        self.delete_key(key, Some(user_id)).await
    }

    async fn list_user_sessions(&self, user_id: i64) -> Result<Vec<SessionSummary>, Error> {
        let mut conn = self.conn.clone();
        let mut call = LIST.prepare_invoke();
        call.key(self.user_index_key(user_id))
            .arg(self.session_key_prefix());
        let flat: Vec<String> = self.run(call.invoke_async(&mut conn)).await?;
        let mut out = flat
            .chunks(4)
            .map(|chunk| match chunk {
                [member, head, sps, last_seen] => Ok(SessionSummary {
                    key: SessionKey::parse(member)
                        .map_err(|_| Error::Corrupt(format!("index member {member:?}")))?,
                    session: decode(head, sps, last_seen)?,
                }),
                _ => Err(Error::Corrupt("list returned a partial entry".to_owned())),
            })
            .collect::<Result<Vec<_>, Error>>()?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_user_sessions(&self, user_id: i64) -> Result<usize, Error> {
        let mut conn = self.conn.clone();
        let mut call = DELETE_USER.prepare_invoke();
        call.key(self.user_index_key(user_id))
            .arg(self.session_key_prefix());
        let removed: u64 = self.run(call.invoke_async(&mut conn)).await?;
        usize::try_from(removed).map_err(|e| Error::Corrupt(e.to_string()))
    }

    async fn remember_once(
        &self,
        namespace: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        check_namespace(namespace)?;
        let ttl_ms = duration_ms("ttl", ttl)?;
        let mut conn = self.conn.clone();
        let marker = format!("{}once:{namespace}:{}", self.prefix, hashed(key));
        let mut cmd = redis::cmd("SET");
        cmd.arg(marker).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        let set: Option<String> = self.run(cmd.query_async(&mut conn)).await?;
        Ok(set.is_some())
    }

    async fn put_temp(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        check_namespace(namespace)?;
        let ttl_ms = duration_ms("ttl", ttl)?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.temp_key(namespace, key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms);
        let _: String = self.run(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn get_temp(&self, namespace: &str, key: &str) -> Result<Option<String>, Error> {
        check_namespace(namespace)?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.temp_key(namespace, key));
        self.run(cmd.query_async(&mut conn)).await
    }

    async fn delete_temp(&self, namespace: &str, key: &str) -> Result<(), Error> {
        check_namespace(namespace)?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.temp_key(namespace, key));
        let _removed: i64 = self.run(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn incr_counter(&self, key: &str, window: Duration) -> Result<u64, Error> {
        let window_ms = duration_ms("window", window)?;
        let mut conn = self.conn.clone();
        let mut call = INCR.prepare_invoke();
        call.key(format!("{}counter:{}", self.prefix, hashed(key)))
            .arg(window_ms);
        self.run(call.invoke_async(&mut conn)).await
    }

    async fn reset_counter(&self, key: &str) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(format!("{}counter:{}", self.prefix, hashed(key)));
        let _removed: i64 = self.run(cmd.query_async(&mut conn)).await?;
        Ok(())
    }
}
