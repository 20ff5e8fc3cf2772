//! Login monitoring: every sign-in attempt and every SSO becomes a [`LoginEvent`], handed to a
//! [`Recorder`] and written to the directory's `login_events` table in batches by a background task.
//!
//! The request path only builds the event (no secret ever goes in: no password, code or token) and
//! queues it; the writer task enriches it (location from the GeoIP database, device from the
//! User-Agent, unknown user told apart from wrong password, the new-country / new-device flags) and
//! inserts up to [`BATCH_ROWS`] rows per statement, at least every [`BATCH_INTERVAL`]. The queue is
//! bounded ([`QUEUE_CAPACITY`]); when it is full a request waits at most [`QUEUE_WAIT`] for room, and
//! an event that still does not fit is counted in [`Recorder::dropped`] and logged, never lost
//! silently. [`Recorder::shutdown`] writes everything queued before it returns (the server calls it
//! after its last request). The same task deletes events older than the retention period.
//!
//! [`lockout`] is the brute-force defence fed by the same sign-in attempts; [`query`] holds what the
//! dashboard reads.

pub mod dashboard;
mod enrich;
pub mod lockout;
pub mod query;
mod signin;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use enrich::{
    address_label, ip_hex, net_hex_range, Device, Enricher, GeoError, Location, LOOPBACK, PRIVATE,
};

use crate::directory::{Directory, Error as DirectoryError};

/// The most rows one INSERT carries.
pub const BATCH_ROWS: usize = 500;
/// The longest an event waits in the writer before its batch is written.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How many events may wait for the writer.
pub const QUEUE_CAPACITY: usize = 10_000;
/// How long a request waits for room in a full queue before the event is counted as dropped.
pub const QUEUE_WAIT: Duration = Duration::from_millis(100);
/// How often expired events are deleted.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How many events the writer keeps for a retry while the directory is failing.
const MAX_PENDING: usize = 50_000;

/// What happened. The string forms are stored and are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Signed in, or an assertion was issued.
    Success,
    /// No such user (the person is told only "incorrect username or password").
    UnknownUser,
    /// The user exists; the password was wrong (told the same way).
    WrongPassword,
    /// The IP allowlists refused the address; `rule` names the rules.
    IpDenied,
    /// A second factor was given and refused.
    MfaFailed,
    /// A second factor is required and the user has none that can be used or enrolled.
    MfaNotEnrolled,
    /// Too many failed attempts for the user or the address.
    LockedOut,
    /// The account is disabled.
    Deactivated,
    /// The SP is not assigned to the user.
    AppNotAssigned,
    /// The security policy (or the SP's requirements) is not met.
    PolicyNotMet,
    /// The SP's request was malformed, unsigned, replayed or from an unknown SP.
    RequestInvalid,
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Outcome; 11] = [
        Outcome::Success,
        Outcome::UnknownUser,
        Outcome::WrongPassword,
        Outcome::IpDenied,
        Outcome::MfaFailed,
        Outcome::MfaNotEnrolled,
        Outcome::LockedOut,
        Outcome::Deactivated,
        Outcome::AppNotAssigned,
        Outcome::PolicyNotMet,
        Outcome::RequestInvalid,
    ];

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::UnknownUser => "unknown_user",
            Outcome::WrongPassword => "wrong_password",
            Outcome::IpDenied => "ip_denied",
            Outcome::MfaFailed => "mfa_failed",
            Outcome::MfaNotEnrolled => "mfa_not_enrolled",
            Outcome::LockedOut => "locked_out",
            Outcome::Deactivated => "deactivated",
            Outcome::AppNotAssigned => "app_not_assigned",
            Outcome::PolicyNotMet => "policy_not_met",
            Outcome::RequestInvalid => "request_invalid",
        }
    }

    /// The outcome with this stored form.
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Failed credentials: what "top failing users" counts.
    pub fn is_credential_failure(self) -> bool {
        matches!(
            self,
            Outcome::UnknownUser | Outcome::WrongPassword | Outcome::MfaFailed | Outcome::LockedOut
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which step the event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The login form and the second factor after it.
    SignIn,
    /// An SSO to an SP (an assertion, or a refusal of one).
    Sso,
}

impl Kind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SignIn => "sign_in",
            Kind::Sso => "sso",
        }
    }
}

/// One sign-in attempt or SSO as the request path knows it. Never put a secret in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// Unix milliseconds; 0 means "now" (set by [`Recorder::record`]).
    pub at: i64,
    /// Sign-in or SSO.
    pub kind: Kind,
    /// The username as typed, or as known from the session; the user may not exist.
    pub username: String,
    /// The user's id when known (the writer fills it in for a wrong password).
    pub user_id: Option<i64>,
    /// The client address as Tessera believed it (after trusted proxies).
    pub ip: IpAddr,
    /// The client's User-Agent as sent (parsed by the writer).
    pub user_agent: String,
    /// The SP's entityID, when an SP was involved.
    pub sp: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for people.
    pub reason: String,
    /// The IP rule(s) or policy that refused, when one did.
    pub rule: Option<String>,
}

impl LoginEvent {
    /// An event with the given essentials; the rest is empty until set.
    pub fn new(kind: Kind, outcome: Outcome, username: &str, ip: IpAddr) -> Self {
        LoginEvent {
            at: 0,
            kind,
            username: username.to_owned(),
            user_id: None,
            ip,
            user_agent: String::new(),
            sp: None,
            outcome,
            reason: String::new(),
            rule: None,
        }
    }

    /// Sets the user's id.
    pub fn user(mut self, id: i64) -> Self {
        self.user_id = Some(id);
        self
    }

    /// Sets the SP.
    pub fn sp(mut self, sp: Option<&str>) -> Self {
        self.sp = sp.map(str::to_owned);
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the refusing rule.
    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Sets the User-Agent (cut to 512 bytes).
    pub fn agent(mut self, user_agent: &str) -> Self {
        let mut end = user_agent.len().min(512);
        while !user_agent.is_char_boundary(end) {
            end -= 1;
        }
        self.user_agent = user_agent[..end].to_owned();
        self
    }
}

/// An event as stored: what the dashboard and the CSV export read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    /// The row's id (random, see the migrations' conventions).
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// `sign_in` or `sso`.
    pub kind: String,
    /// The username as typed or as known; the user may not exist.
    pub username: String,
    /// The user's id, when the user exists.
    pub user_id: Option<i64>,
    /// The client address as Tessera believed it.
    pub ip: String,
    /// The SP's entityID, when an SP was involved.
    pub sp: Option<String>,
    /// An [`Outcome`]'s stored form (older rows may carry other words, e.g. recovery steps).
    pub outcome: String,
    /// Why, for people.
    pub reason: String,
    /// The IP rule(s) or policy that refused.
    pub rule: Option<String>,
    /// ISO country code, `private` or `loopback`; `None` when unknown.
    pub country: Option<String>,
    /// City name, when the GeoIP database has one.
    pub city: Option<String>,
    /// Browser family parsed from the User-Agent.
    pub browser: Option<String>,
    /// Operating system parsed from the User-Agent.
    pub os: Option<String>,
    /// Device class: desktop, mobile, phone, appliance, crawler, other.
    pub device: Option<String>,
    /// The User-Agent as sent (cut to 512 bytes).
    pub user_agent: Option<String>,
    /// A successful sign-in from a country never seen on an earlier success of the user.
    pub new_country: bool,
    /// A successful sign-in from a device (browser + OS) never seen on an earlier success.
    pub new_device: bool,
}

/// A row ready to insert: the event after enrichment. The fields mean what [`LoginEvent`]'s and
/// [`StoredEvent`]'s of the same names mean.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub at: i64,
    pub kind: Kind,
    pub username: String,
    pub user_id: Option<i64>,
    pub ip: IpAddr,
    pub sp: Option<String>,
    pub outcome: Outcome,
    pub reason: String,
    pub rule: Option<String>,
    pub location: Location,
    pub device: Device,
    pub user_agent: String,
    pub new_country: bool,
    pub new_device: bool,
}

/// What the user's earlier successful sign-ins showed: countries and (browser, OS) pairs.
#[derive(Debug, Clone, Default)]
pub struct SignInHistory {
    /// Countries (codes or labels) of earlier successes.
    pub countries: HashSet<String>,
    /// (browser, OS) pairs of earlier successes.
    pub devices: HashSet<(Option<String>, Option<String>)>,
}

impl SignInHistory {
    /// Whether a sign-in at `location` with `device` would be new: a country that is known and never
    /// seen, or a recognised device never seen. A user with no earlier success has seen nothing.
    pub fn is_new(&self, location: &Location, device: &Device) -> (bool, bool) {
        let new_country = location
            .country
            .as_ref()
            .is_some_and(|c| !self.countries.contains(c));
        let known_device = device.browser.is_some() || device.os.is_some();
        let new_device = known_device
            && !self
                .devices
                .contains(&(device.browser.clone(), device.os.clone()));
        (new_country, new_device)
    }

    /// Adds a success.
    pub fn add(&mut self, location: &Location, device: &Device) {
        if let Some(c) = &location.country {
            self.countries.insert(c.clone());
        }
        if device.browser.is_some() || device.os.is_some() {
            self.devices
                .insert((device.browser.clone(), device.os.clone()));
        }
    }
}

/// How the recorder runs.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// Events older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u64,
    /// See [`BATCH_ROWS`].
    pub batch_rows: usize,
    /// See [`BATCH_INTERVAL`].
    pub batch_interval: Duration,
    /// See [`QUEUE_CAPACITY`].
    pub capacity: usize,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        RecorderSettings {
            retention_days: 365,
            batch_rows: BATCH_ROWS,
            batch_interval: BATCH_INTERVAL,
            capacity: QUEUE_CAPACITY,
        }
    }
}

/// What the writer task is asked.
enum Command {
    Event(LoginEvent),
    /// Write everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
    /// Delete expired events now, then answer with how many went.
    Purge(oneshot::Sender<Result<u64, DirectoryError>>),
    /// Write everything queued, answer and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Counters a monitoring system can read.
#[derive(Debug, Default)]
struct Stats {
    written: AtomicU64,
    dropped: AtomicU64,
}

/// The handle the request path records events through. Cheap to clone; every clone feeds the same
/// writer task.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    enricher: Arc<Enricher>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// The last timestamp handed out, so events of the same millisecond keep their order.
static LAST_AT_MS: AtomicI64 = AtomicI64::new(0);

/// Unix milliseconds, strictly increasing within this process.
pub fn next_at_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let mut last = LAST_AT_MS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_AT_MS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

impl Recorder {
    /// Starts the writer task (on the current tokio runtime) over `directory`.
    pub fn start(
        directory: Directory,
        enricher: Arc<Enricher>,
        settings: RecorderSettings,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel(settings.capacity.max(1));
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            directory,
            enricher: enricher.clone(),
            stats: stats.clone(),
            settings,
            pending: Vec::new(),
        };
        tokio::spawn(writer.run(rx));
        Recorder {
            tx,
            stats,
            enricher,
        }
    }

    /// Queues `event` (its time set now when 0). Waits at most [`QUEUE_WAIT`] when the queue is full;
    /// an event that cannot be queued is counted in [`Recorder::dropped`] and logged.
    pub async fn record(&self, mut event: LoginEvent) {
        if event.at == 0 {
            event.at = next_at_ms();
        }
        let event = match self.tx.try_send(Command::Event(event)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(command)) => command,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lost("the event writer has stopped");
                return;
            }
        };
        if self.tx.send_timeout(event, QUEUE_WAIT).await.is_err() {
            self.lost("the event queue is full");
        }
    }

    fn lost(&self, why: &str) {
        let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(dropped_total = total, "login event not recorded: {why}");
    }

    /// Waits until every event queued before this call is written (or failed to be).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Deletes the events older than the retention period now; returns how many went.
    pub async fn purge_expired(&self) -> Result<u64, DirectoryError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Purge(tx)).await.is_err() {
            return Ok(0);
        }
        rx.await.unwrap_or(Ok(0))
    }

    /// Writes everything queued and stops the writer. Events recorded afterwards are counted as
    /// dropped. Idempotent.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    /// Events that could not be queued or written.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// The location and device lookups, for the sign-in path's new-device check.
    pub fn enricher(&self) -> &Enricher {
        &self.enricher
    }
}

/// The background task that owns the directory connection for events.
struct Writer {
    directory: Directory,
    enricher: Arc<Enricher>,
    stats: Arc<Stats>,
    settings: RecorderSettings,
    /// Events received and not yet written.
    pending: Vec<LoginEvent>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings.batch_interval,
            self.settings.batch_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first purge a little after start, not at once: a starting node has other work.
        let mut purge = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(30),
            PURGE_INTERVAL,
        );
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Event(event)) => {
                        self.pending.push(event);
                        if self.pending.len() >= self.settings.batch_rows {
                            self.write().await;
                        }
                    }
                    Some(Command::Flush(done)) => {
                        self.write().await;
                        let _ = done.send(());
                    }
                    Some(Command::Purge(done)) => {
                        let _ = done.send(self.purge().await);
                    }
                    Some(Command::Shutdown(done)) => {
                        rx.close();
                        while let Some(command) = rx.recv().await {
                            match command {
                                Command::Event(event) => self.pending.push(event),
                                Command::Flush(other) | Command::Shutdown(other) => {
                                    let _ = other.send(());
                                }
                                Command::Purge(other) => {
                                    let _ = other.send(Ok(0));
                                }
                            }
                        }
                        self.write().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.write().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !self.pending.is_empty() {
                        self.write().await;
                    }
                }
                _ = purge.tick() => {
                    if let Err(e) = self.purge().await {
                        tracing::warn!(error = %e, "could not delete expired login events");
                    }
                }
            }
        }
    }

    /// Deletes events older than the retention period.
    async fn purge(&self) -> Result<u64, DirectoryError> {
        if self.settings.retention_days == 0 {
            return Ok(0);
        }
        let days = i64::try_from(self.settings.retention_days).unwrap_or(i64::MAX / 86_400_000);
        let before = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(days.saturating_mul(86_400_000));
        let removed = self.directory.purge_login_events(before).await?;
        if removed > 0 {
            tracing::info!(removed, "expired login events deleted");
        }
        Ok(removed)
    }

    /// Writes the pending events in chunks of `batch_rows`. On a directory failure the events stay
    /// pending for the next tick (up to [`MAX_PENDING`]; older ones beyond are counted as dropped).
    async fn write(&mut self) {
        while !self.pending.is_empty() {
            let take = self.pending.len().min(self.settings.batch_rows.max(1));
            let batch: Vec<LoginEvent> = self.pending[..take].to_vec();
            match self.write_batch(&batch).await {
                Ok(()) => {
                    self.pending.drain(..take);
                    self.stats.written.fetch_add(take as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, pending = self.pending.len(), "could not write login events; will retry");
                    if self.pending.len() > MAX_PENDING {
                        let excess = self.pending.len() - MAX_PENDING;
                        self.pending.drain(..excess);
                        self.stats
                            .dropped
                            .fetch_add(excess as u64, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }

    async fn write_batch(&self, batch: &[LoginEvent]) -> Result<(), DirectoryError> {
        let mut histories: HashMap<i64, SignInHistory> = HashMap::new();
        let mut rows = Vec::with_capacity(batch.len());
        for event in batch {
            let mut outcome = event.outcome;
            let mut user_id = event.user_id;
            // The request path cannot tell these apart without a timing difference; here it costs
            // nothing (and only the log ever says which).
            if outcome == Outcome::WrongPassword && user_id.is_none() {
                match self.directory.user_id_of(&event.username).await? {
                    Some(id) => user_id = Some(id),
                    None => outcome = Outcome::UnknownUser,
                }
            }
            let location = self.enricher.locate(event.ip);
            let device = self.enricher.device(&event.user_agent);
            let (mut new_country, mut new_device) = (false, false);
            if let (Outcome::Success, Kind::SignIn, Some(id)) = (outcome, event.kind, user_id) {
                if let std::collections::hash_map::Entry::Vacant(slot) = histories.entry(id) {
                    slot.insert(self.directory.sign_in_history(id).await?);
                }
                if let Some(history) = histories.get_mut(&id) {
                    (new_country, new_device) = history.is_new(&location, &device);
                    history.add(&location, &device);
                }
            }
            rows.push(NewRow {
                at: event.at,
                kind: event.kind,
                username: event.username.clone(),
                user_id,
                ip: event.ip,
                sp: event.sp.clone(),
                outcome,
                reason: event.reason.clone(),
                rule: event.rule.clone(),
                location,
                device,
                user_agent: event.user_agent.clone(),
                new_country,
                new_device,
            });
        }
        self.directory.insert_login_events(&rows).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outcomes_have_stable_names() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        assert_eq!(Outcome::parse("nope"), None);
    }

    #[test]
    fn history_says_what_is_new() {
        let paris = Location {
            country: Some("FR".into()),
            city: Some("Paris".into()),
        };
        let chrome = Device {
            browser: Some("Chrome".into()),
            os: Some("Linux".into()),
            class: Some("desktop".into()),
        };
        let mut h = SignInHistory::default();
        assert_eq!(h.is_new(&paris, &chrome), (true, true));
        h.add(&paris, &chrome);
        assert_eq!(h.is_new(&paris, &chrome), (false, false));
        assert_eq!(
            h.is_new(&Location::default(), &Device::default()),
            (false, false)
        );
        let firefox = Device {
            browser: Some("Firefox".into()),
            ..chrome.clone()
        };
        assert_eq!(h.is_new(&paris, &firefox), (false, true));
    }
}
