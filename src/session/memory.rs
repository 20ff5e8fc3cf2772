//! The in-memory session store: the default for a single Tessera node.
//!
//! Everything lives in one mutex-guarded map set; no lock is held across an await. Deadlines use a
//! monotonic clock, real by default or a [`ManualClock`] that tests step forward. Expired entries
//! behave as absent at once and are swept from memory every few hundred writes, so attacker-driven
//! keys (replay markers, counters) cannot pile up forever.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    check_namespace, duration_ms, hashed, unix_now, Error, Session, SessionId, SessionKey,
    SessionStore, SessionSummary, SpSession,
};

/// Writes between two sweeps of expired entries: amortizes the O(n) sweep.
const SWEEP_EVERY: u32 = 256;

/// A session store in process memory. Sessions die with the process and are not shared between
/// nodes; use [`super::RedisStore`] for that.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// All state behind one lock: operations are short and never await while holding it.
    state: Mutex<State>,
    /// The time source for deadlines: `None` is the real monotonic clock.
    clock: Option<ManualClock>,
}

/// A monotonic clock that moves only when told, so tests can step over timeouts at once.
///
/// Clones share the same time. Only deadlines follow it; `last_seen` stays real unix time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    /// The current time, shared by every clone.
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock standing at the real current instant.
    pub fn new() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Moves the clock forward by `by` (saturating at the furthest representable instant).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// The clock's current time.
    pub fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The maps of a [`MemoryStore`].
#[derive(Debug, Default)]
struct State {
    /// Sessions by key (hash of the id, never the id itself).
    sessions: HashMap<SessionKey, Entry>,
    /// Keys of each user's sessions, for listing and deactivation.
    by_user: HashMap<i64, BTreeSet<SessionKey>>,
    /// Replay markers ("namespace:hash") and when they lapse.
    once: HashMap<String, Instant>,
    temp: HashMap<String, (String, Instant)>,
    /// Counters by hashed key.
    counters: HashMap<String, Counter>,
    /// Writes since the last sweep of expired entries.
    writes_since_sweep: u32,
}

/// One stored session with its timing.
#[derive(Debug)]
struct Entry {
    /// The session as last written; `last_seen` kept current by touches.
    session: Session,
    /// The idle timeout, reapplied on each touch.
    idle: Duration,
    /// The absolute deadline no touch can pass.
    deadline: Instant,
    /// When the session ends if not touched again: min(last touch + idle, deadline).
    expires: Instant,
}

impl Entry {
    /// Whether the session is still live at `now`.
    fn alive(&self, now: Instant) -> bool {
        now < self.expires
    }

    /// Restarts the idle timeout (capped by the absolute deadline) and records the use.
    fn touch(&mut self, now: Instant) {
        self.expires = now
            .checked_add(self.idle)
            .map_or(self.deadline, |t| t.min(self.deadline));
        self.session.last_seen = unix_now();
    }
}

/// A windowed counter.
#[derive(Debug)]
struct Counter {
    /// Increments so far in this window.
    value: u64,
    /// When the window ends and the counter disappears.
    expires: Instant,
}

impl MemoryStore {
    /// An empty store on the real clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose deadlines follow `clock` (for tests).
    pub fn with_clock(clock: ManualClock) -> Self {
        Self {
            state: Mutex::default(),
            clock: Some(clock),
        }
    }

    /// The current time for deadlines.
    fn now(&self) -> Instant {
        self.clock
            .as_ref()
            .map_or_else(Instant::now, ManualClock::now)
    }

    /// Locks the state. A poisoned lock (a panic elsewhere while holding it) still holds
    /// consistent maps, because every mutation below completes before anything can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Removes a session and its index entry; returns it if it was there (live or not).
    fn remove(&mut self, key: &SessionKey) -> Option<Entry> {
        let entry = self.sessions.remove(key)?;
        let user_id = entry.session.user_id;
        if let Some(keys) = self.by_user.get_mut(&user_id) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(&user_id);
            }
        }
        Some(entry)
    }

    /// The live session under `key`, dropping it if it has expired.
    fn live_mut(&mut self, key: &SessionKey, now: Instant) -> Option<&mut Entry> {
        let alive = self.sessions.get(key)?.alive(now);
        if !alive {
            self.remove(key);
            return None;
        }
        self.sessions.get_mut(key)
    }

    /// Counts a write and, every [`SWEEP_EVERY`] writes, drops everything expired.
    fn note_write(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep < SWEEP_EVERY {
            return;
        }
        self.writes_since_sweep = 0;
        let dead: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, e)| !e.alive(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            self.remove(&key);
        }
        self.once.retain(|_, lapses| now < *lapses);
        self.temp.retain(|_, (_, lapses)| now < *lapses);
        self.counters.retain(|_, c| now < c.expires);
    }
}

/// `now + d`, or [`Error::InvalidDuration`] if that is past what the clock can represent.
fn after(now: Instant, d: Duration, what: &'static str) -> Result<Instant, Error> {
    now.checked_add(d).ok_or(Error::InvalidDuration(what))
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(
        &self,
        session: &Session,
        idle: Duration,
        absolute: Duration,
    ) -> Result<SessionId, Error> {
        duration_ms("idle", idle)?;
        duration_ms("absolute", absolute)?;
        let id = SessionId::generate()?;
        let key = id.key();
        let now = self.now();
        let deadline = after(now, absolute, "absolute")?;
        let mut session = session.clone();
        session.last_seen = unix_now();
        let user_id = session.user_id;
        let mut entry = Entry {
            session,
            idle,
            deadline,
            expires: deadline,
        };
        entry.touch(now);
        let mut state = self.lock();
        state.note_write(now);
        state
            .by_user
            .entry(user_id)
            .or_default()
            .insert(key.clone());
        state.sessions.insert(key, entry);
        Ok(id)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error> {
        let now = self.now();
        let mut state = self.lock();
        Ok(state.live_mut(&id.key(), now).map(|entry| {
            entry.touch(now);
            entry.session.clone()
        }))
    }

    async fn update(&self, id: &SessionId, session: &Session) -> Result<bool, Error> {
        let now = self.now();
        let mut state = self.lock();
        let Some(entry) = state.live_mut(&id.key(), now) else {
            return Ok(false);
        };
        if entry.session.user_id != session.user_id {
            return Err(Error::UserChanged);
        }
        entry.session = session.clone();
        entry.touch(now);
        Ok(true)
    }

    async fn add_sp_session(&self, id: &SessionId, sp: &SpSession) -> Result<bool, Error> {
        let now = self.now();
        let mut state = self.lock();
        let Some(entry) = state.live_mut(&id.key(), now) else {
            return Ok(false);
        };
        if !entry.session.sp_sessions.contains(sp) {
            entry.session.sp_sessions.push(sp.clone());
        }
        entry.touch(now);
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, Error> {
        let now = self.now();
        let mut state = self.lock();
        Ok(state
            .remove(&id.key())
            .is_some_and(|entry| entry.alive(now)))
    }

    async fn delete_for_user(&self, user_id: i64, key: &SessionKey) -> Result<bool, Error> {
        let now = self.now();
        let mut state = self.lock();
        let owned = state
            .sessions
            .get(key)
            .is_some_and(|e| e.session.user_id == user_id);
        if !owned {
            return Ok(false);
        }
        Ok(state.remove(key).is_some_and(|entry| entry.alive(now)))
    }

    async fn list_user_sessions(&self, user_id: i64) -> Result<Vec<SessionSummary>, Error> {
        let now = self.now();
        let mut state = self.lock();
        let keys: Vec<SessionKey> = state
            .by_user
            .get(&user_id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = state.live_mut(&key, now) {
                out.push(SessionSummary {
                    session: entry.session.clone(),
                    key,
                });
            }
        }
        Ok(out)
    }

    async fn delete_user_sessions(&self, user_id: i64) -> Result<usize, Error> {
        let now = self.now();
        let mut state = self.lock();
        let keys = state.by_user.remove(&user_id).unwrap_or_default();
        let mut live = 0;
        for key in keys {
            if state.sessions.remove(&key).is_some_and(|e| e.alive(now)) {
                live += 1;
            }
        }
        Ok(live)
    }

    async fn remember_once(
        &self,
        namespace: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        check_namespace(namespace)?;
        duration_ms("ttl", ttl)?;
        let now = self.now();
        let lapses = after(now, ttl, "ttl")?;
        let marker = format!("{namespace}:{}", hashed(key));
        let mut state = self.lock();
        state.note_write(now);
        if state.once.get(&marker).is_some_and(|t| now < *t) {
            return Ok(false);
        }
        state.once.insert(marker, lapses);
        Ok(true)
    }

    async fn put_temp(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        check_namespace(namespace)?;
        let now = self.now();
        let lapses = after(now, ttl, "ttl")?;
        let mut state = self.lock();
        state.note_write(now);
        state.temp.insert(
            format!("{namespace}:{}", hashed(key)),
            (value.to_owned(), lapses),
        );
        Ok(())
    }

    async fn get_temp(&self, namespace: &str, key: &str) -> Result<Option<String>, Error> {
        check_namespace(namespace)?;
        let now = self.now();
        let state = self.lock();
        Ok(state
            .temp
            .get(&format!("{namespace}:{}", hashed(key)))
            .filter(|(_, lapses)| now < *lapses)
            .map(|(v, _)| v.clone()))
    }

    async fn delete_temp(&self, namespace: &str, key: &str) -> Result<(), Error> {
        check_namespace(namespace)?;
        self.lock()
            .temp
            .remove(&format!("{namespace}:{}", hashed(key)));
        Ok(())
    }

    async fn incr_counter(&self, key: &str, window: Duration) -> Result<u64, Error> {
        duration_ms("window", window)?;
        let now = self.now();
        let expires = after(now, window, "window")?;
        let mut state = self.lock();
        state.note_write(now);
        let counter = state
            .counters
            .entry(hashed(key))
            .or_insert(Counter { value: 0, expires });
        if now >= counter.expires {
            *counter = Counter { value: 0, expires };
        }
        counter.value = counter.value.saturating_add(1);
        Ok(counter.value)
    }

    async fn reset_counter(&self, key: &str) -> Result<(), Error> {
        self.lock().counters.remove(&hashed(key));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! Clock-driven checks with a manual clock: exact, and instant to run. The behaviour
    //! shared with Redis is covered by the conformance suite in tests/session_store.rs.
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::session::AuthnMethod;

    fn session(user_id: i64) -> Session {
        Session::new(
            user_id,
            "alice",
            vec![AuthnMethod::Password],
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "test",
            1_700_000_000,
        )
    }

    #[tokio::test]
    async fn idle_timeout_is_pushed_back_by_use_but_not_past_absolute() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let id = store
            .create(
                &session(1),
                Duration::from_secs(60),
                Duration::from_secs(150),
            )
            .await
            .unwrap();
        for _ in 0..2 {
            clock.advance(Duration::from_secs(59));
            assert!(store.get(&id).await.unwrap().is_some());
        }
        // 118 s in: the absolute deadline (150 s) is nearer than the idle timeout (60 s).
        clock.advance(Duration::from_secs(31));
        assert!(store.get(&id).await.unwrap().is_some());
        clock.advance(Duration::from_millis(1001));
        assert!(store.get(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn untouched_session_expires_after_idle() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let id = store
            .create(
                &session(1),
                Duration::from_secs(60),
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(60));
        assert!(store.get(&id).await.unwrap().is_none());
        assert!(store.list_user_sessions(1).await.unwrap().is_empty());
        assert!(!store.delete(&id).await.unwrap());
    }

    #[tokio::test]
    async fn sweep_drops_expired_entries_from_memory() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        for i in 0..SWEEP_EVERY {
            store
                .remember_once("ns", &i.to_string(), Duration::from_secs(1))
                .await
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
        for i in 0..SWEEP_EVERY {
            store
                .remember_once("other", &i.to_string(), Duration::from_secs(10))
                .await
                .unwrap();
        }
        let state = store.lock();
        assert!(state.once.keys().all(|k| k.starts_with("other:")));
        assert_eq!(state.once.len(), SWEEP_EVERY as usize);
    }

    #[tokio::test]
    async fn counter_window_restarts_after_it_ends() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        assert_eq!(
            store
                .incr_counter("k", Duration::from_secs(10))
                .await
                .unwrap(),
            1
        );
        clock.advance(Duration::from_secs(9));
        assert_eq!(
            store
                .incr_counter("k", Duration::from_secs(10))
                .await
                .unwrap(),
            2
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            store
                .incr_counter("k", Duration::from_secs(10))
                .await
                .unwrap(),
            1
        );
    }
}
