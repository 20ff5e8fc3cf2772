//! Sign-in and SSO events (`login_events`): the batched writes of [`crate::events::Recorder`], the
//! retention purge, the anomaly history, and the dashboard's queries ([`crate::events::query`] has
//! the filter types). [`Directory::record_login_event`] is the older single-row write, kept for
//! callers outside the sign-in path.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{db_error, new_id, Directory, Error};
use crate::events::query::{Bucket, Dimension, EventFilter};
use crate::events::{
    ip_hex, net_hex_range, next_at_ms, NewRow, Outcome, SignInHistory, StoredEvent,
};

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// Unix milliseconds (strictly increasing per process, so the order of events is kept).
    pub at: i64,
    /// The username as typed or as known from the session.
    pub username: String,
    /// The user's id, when the user exists.
    pub user_id: Option<i64>,
    /// The client address as Tessera believed it.
    pub ip: String,
    /// The SP's entityID, for an SSO.
    pub sp: Option<String>,
    /// What happened, e.g. `ip_denied`.
    pub outcome: String,
    /// Why: the rules that refused, or what is missing. Never a secret.
    pub reason: String,
}

impl Directory {
    /// Records an event. `at` is set here; the value passed in is ignored.
    pub async fn record_login_event(&self, event: &LoginEvent) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO login_events (id, at, username, user_id, ip, sp, outcome, reason, ip_hex) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id())
        .bind(next_at_ms())
        .bind(&event.username)
        .bind(event.user_id)
        .bind(&event.ip)
        .bind(event.sp.as_deref())
        .bind(&event.outcome)
        .bind(&event.reason)
        .bind(event.ip.parse().ok().map(ip_hex))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The latest events of a user (or of every user with `None`), newest first.
    pub async fn login_events(
        &self,
        username: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LoginEvent>, Error> {
        let rows = match username {
            Some(u) => {
                sqlx::query(
                    "SELECT at, username, user_id, ip, sp, outcome, reason FROM login_events \
                     WHERE username = $1 ORDER BY at DESC, id DESC LIMIT $2",
                )
                .bind(u)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT at, username, user_id, ip, sp, outcome, reason FROM login_events \
                     ORDER BY at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(LoginEvent {
                    at: row.try_get("at").map_err(db_error)?,
                    username: row.try_get("username").map_err(db_error)?,
                    user_id: row.try_get("user_id").map_err(db_error)?,
                    ip: row.try_get("ip").map_err(db_error)?,
                    sp: row.try_get("sp").map_err(db_error)?,
                    outcome: row.try_get("outcome").map_err(db_error)?,
                    reason: row.try_get("reason").map_err(db_error)?,
                })
            })
            .collect()
    }
}

/// The columns of a stored event, in [`stored_event`]'s order.
const EVENT_COLUMNS: &str =
    "id, at, kind, username, user_id, ip, sp, outcome, reason, rule, country, \
     city, browser, os, device, user_agent, new_country, new_device";

/// The stored form of [`Outcome::Success`], the only outcome that carries anomaly flags.
const SUCCESS: &str = "success";

/// A row flagged as an anomaly (0/1 columns, migration 0007).
const FLAGGED: &str = "(new_country = 1 OR new_device = 1)";

/// Above this many buckets (e.g. hours over years), [`Directory::login_events_over_time`] groups
/// instead of counting bucket by bucket.
const MAX_COUNTED_BUCKETS: i64 = 2_000;

/// Columns of a batched insert, and how many.
const INSERT_COLUMNS: &str =
    "id, at, kind, username, user_id, ip, ip_hex, sp, outcome, reason, rule, \
     country, city, browser, os, device, user_agent, new_country, new_device";
const INSERT_COLUMN_COUNT: usize = 19;

/// A bound value of a dynamically built query.
#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Int(i64),
}

/// A WHERE clause built from a filter, with its parameters numbered in order.
#[derive(Debug, Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    /// Adds a parameter and returns its placeholder.
    fn param(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    /// `column IN (...)` over `values`; an empty list matches nothing.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            self.clauses.push("1 = 0".to_owned());
            return;
        }
        let marks: Vec<String> = values
            .iter()
            .map(|v| self.param(Param::Text(v.clone())))
            .collect();
        self.clauses
            .push(format!("{column} IN ({})", marks.join(", ")));
    }

    fn of(filter: &EventFilter) -> Where {
        let mut w = Where::default();
        w.add(filter);
        w
    }

    /// Adds the filter's clauses.
    fn add(&mut self, filter: &EventFilter) {
        let w = self;
        if let Some(u) = &filter.username {
            let p = w.param(Param::Text(u.clone()));
            w.clauses.push(format!("username = {p}"));
        }
        if !filter.outcomes.is_empty() {
            let names: Vec<String> = filter
                .outcomes
                .iter()
                .map(|o| o.as_str().to_owned())
                .collect();
            w.any_of("outcome", &names);
        }
        if let Some(kind) = filter.kind {
            let p = w.param(Param::Text(kind.as_str().to_owned()));
            w.clauses.push(format!("kind = {p}"));
        }
        if let Some(from) = filter.from_ms {
            let p = w.param(Param::Int(from));
            w.clauses.push(format!("at >= {p}"));
        }
        if let Some(to) = filter.to_ms {
            let p = w.param(Param::Int(to));
            w.clauses.push(format!("at < {p}"));
        }
        if let Some(net) = &filter.address {
            let (lo, hi) = net_hex_range(net);
            if lo == hi {
                let p = w.param(Param::Text(lo));
                w.clauses.push(format!("ip_hex = {p}"));
            } else {
                let a = w.param(Param::Text(lo));
                let b = w.param(Param::Text(hi));
                w.clauses.push(format!("ip_hex BETWEEN {a} AND {b}"));
            }
        }
        if let Some(sp) = &filter.sp {
            let p = w.param(Param::Text(sp.clone()));
            w.clauses.push(format!("sp = {p}"));
        }
        if let Some(country) = &filter.country {
            let p = w.param(Param::Text(country.clone()));
            w.clauses.push(format!("country = {p}"));
        }
        if filter.anomaly {
            // Only successes carry flags; naming the outcome lets the (outcome, at, ...) index narrow
            // the rows to the period's successes before the flags are read.
            w.clauses
                .push(format!("outcome = '{SUCCESS}' AND {FLAGGED}"));
        }
        if let Some(visible) = &filter.visible_sps {
            w.any_of("sp", visible);
        }
    }

    /// Restricts outcomes to `default` unless the filter named outcomes itself.
    fn outcomes_unless_given(&mut self, filter: &EventFilter, default: &[Outcome]) {
        if filter.outcomes.is_empty() {
            let names: Vec<String> = default.iter().map(|o| o.as_str().to_owned()).collect();
            self.any_of("outcome", &names);
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn bind<'q>(
        &'q self,
        mut q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        for p in &self.params {
            q = match p {
                Param::Text(t) => q.bind(t.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

fn stored_event(row: &sqlx::any::AnyRow) -> Result<StoredEvent, Error> {
    Ok(StoredEvent {
        id: row.try_get("id").map_err(db_error)?,
        at: row.try_get("at").map_err(db_error)?,
        kind: row.try_get("kind").map_err(db_error)?,
        username: row.try_get("username").map_err(db_error)?,
        user_id: row.try_get("user_id").map_err(db_error)?,
        ip: row.try_get("ip").map_err(db_error)?,
        sp: row.try_get("sp").map_err(db_error)?,
        outcome: row.try_get("outcome").map_err(db_error)?,
        reason: row.try_get("reason").map_err(db_error)?,
        rule: row.try_get("rule").map_err(db_error)?,
        country: row.try_get("country").map_err(db_error)?,
        city: row.try_get("city").map_err(db_error)?,
        browser: row.try_get("browser").map_err(db_error)?,
        os: row.try_get("os").map_err(db_error)?,
        device: row.try_get("device").map_err(db_error)?,
        user_agent: row.try_get("user_agent").map_err(db_error)?,
        new_country: row.try_get::<i64, _>("new_country").map_err(db_error)? != 0,
        new_device: row.try_get::<i64, _>("new_device").map_err(db_error)? != 0,
    })
}

/// `(key, count)` rows of a GROUP BY.
fn counts(rows: &[sqlx::any::AnyRow]) -> Result<Vec<(Option<String>, i64)>, Error> {
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Option<String>, _>(0).map_err(db_error)?,
                r.try_get::<i64, _>(1).map_err(db_error)?,
            ))
        })
        .collect()
}

impl Directory {
    /// Inserts enriched events, [`INSERT_COLUMN_COUNT`] parameters a row, in one statement per call
    /// (the recorder passes at most [`crate::events::BATCH_ROWS`] rows, well under both backends'
    /// parameter limits).
    pub async fn insert_login_events(&self, rows: &[NewRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut sql = format!("INSERT INTO login_events ({INSERT_COLUMNS}) VALUES ");
        for i in 0..rows.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..INSERT_COLUMN_COUNT {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i * INSERT_COLUMN_COUNT + c + 1));
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for row in rows {
            q = q
                .bind(new_id())
                .bind(row.at)
                .bind(row.kind.as_str())
                .bind(row.username.as_str())
                .bind(row.user_id)
                .bind(row.ip.to_canonical().to_string())
                .bind(ip_hex(row.ip))
                .bind(row.sp.as_deref())
                .bind(row.outcome.as_str())
                .bind(row.reason.as_str())
                .bind(row.rule.as_deref())
                .bind(row.location.country.as_deref())
                .bind(row.location.city.as_deref())
                .bind(row.device.browser.as_deref())
                .bind(row.device.os.as_deref())
                .bind(row.device.class.as_deref())
                .bind((!row.user_agent.is_empty()).then_some(row.user_agent.as_str()))
                .bind(i64::from(row.new_country))
                .bind(i64::from(row.new_device));
        }
        q.execute(&self.pool).await.map_err(db_error)?;
        Ok(())
    }

    /// Deletes the events before `before_ms` (unix ms); returns how many.
    pub async fn purge_login_events(&self, before_ms: i64) -> Result<u64, Error> {
        let result = sqlx::query("DELETE FROM login_events WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected())
    }

    /// The id of `username`, if such a user exists.
    pub async fn user_id_of(&self, username: &str) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get("id").map_err(db_error)).transpose()
    }

    /// The countries and devices of the user's earlier successful sign-ins.
    pub async fn sign_in_history(&self, user_id: i64) -> Result<SignInHistory, Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT country, browser, os FROM login_events \
             WHERE user_id = $1 AND outcome = 'success' AND kind = 'sign_in'",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut history = SignInHistory::default();
        for row in rows {
            if let Some(c) = row
                .try_get::<Option<String>, _>("country")
                .map_err(db_error)?
            {
                history.countries.insert(c);
            }
            let browser: Option<String> = row.try_get("browser").map_err(db_error)?;
            let os: Option<String> = row.try_get("os").map_err(db_error)?;
            if browser.is_some() || os.is_some() {
                history.devices.insert((browser, os));
            }
        }
        Ok(history)
    }

    /// The latest events matching `filter`, newest first.
    pub async fn latest_login_events(
        &self,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        let mut w = Where::of(filter);
        let limit = w.param(Param::Int(limit.max(0)));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM login_events{} ORDER BY at DESC, id DESC LIMIT {limit}",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(stored_event).collect()
    }

    /// Attempts per time bucket and outcome: `(bucket start in unix ms, outcome, count)`, oldest
    /// first, empty buckets left out.
    ///
    /// Grouping a year of rows by a computed bucket makes the database sort them all; instead each
    /// (bucket, outcome) pair is counted as a range of the (outcome, at, ...) index, which needs no
    /// sort and no table access. Past [`MAX_COUNTED_BUCKETS`] pairs the plain GROUP BY is used.
    pub async fn login_events_over_time(
        &self,
        filter: &EventFilter,
        bucket: Bucket,
    ) -> Result<Vec<(i64, String, i64)>, Error> {
        let size = bucket.millis();
        let bounds = sqlx::query("SELECT MIN(at) AS lo, MAX(at) AS hi FROM login_events")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let (Some(first), Some(last)) = (
            bounds.try_get::<Option<i64>, _>("lo").map_err(db_error)?,
            bounds.try_get::<Option<i64>, _>("hi").map_err(db_error)?,
        ) else {
            return Ok(Vec::new());
        };
        let lo = filter
            .from_ms
            .map_or(first, |f| f.max(first))
            .div_euclid(size)
            * size;
        let hi = filter.to_ms.map_or(last + 1, |t| t.min(last + 1));
        if hi <= lo {
            return Ok(Vec::new());
        }
        if (hi - lo) / size <= MAX_COUNTED_BUCKETS {
            let mut w = Where::default();
            let (lo_p, hi_p) = (w.param(Param::Int(lo)), w.param(Param::Int(hi)));
            w.add(filter);
            let more = if w.clauses.is_empty() {
                String::new()
            } else {
                format!(" AND {}", w.clauses.join(" AND "))
            };
            let sql = format!(
                "WITH RECURSIVE buckets (s) AS (SELECT {lo_p} UNION ALL SELECT s + {size} FROM buckets \
                 WHERE s + {size} < {hi_p}), \
                 outcomes (o) AS (SELECT DISTINCT outcome FROM login_events) \
                 SELECT s, o, n FROM (SELECT s, o, (SELECT COUNT(*) FROM login_events \
                 WHERE outcome = o AND at >= s AND at < s + {size}{more}) AS n \
                 FROM buckets, outcomes) AS counted WHERE n > 0 ORDER BY s, o"
            );
            let rows = w
                .bind(sqlx::query(&sql))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            return rows
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<i64, _>(0).map_err(db_error)?,
                        r.try_get::<String, _>(1).map_err(db_error)?,
                        r.try_get::<i64, _>(2).map_err(db_error)?,
                    ))
                })
                .collect();
        }
        let w = Where::of(filter);
        let sql = format!(
            "SELECT (at / {size}) * {size} AS bucket, outcome, COUNT(*) AS n FROM login_events{} \
             GROUP BY (at / {size}) * {size}, outcome ORDER BY bucket, outcome",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0).map_err(db_error)?,
                    r.try_get::<String, _>(1).map_err(db_error)?,
                    r.try_get::<i64, _>(2).map_err(db_error)?,
                ))
            })
            .collect()
    }

    /// The usernames with the most failed credentials (unknown user, wrong password, failed second
    /// factor, locked out, unless the filter names outcomes), most first.
    pub async fn top_failing_users(
        &self,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, Error> {
        let failures: Vec<Outcome> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_credential_failure())
            .collect();
        self.top_by("username", filter, &failures, limit)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|(k, n)| (k.unwrap_or_default(), n))
                    .collect()
            })
    }

    /// The client addresses with the most refusals of any kind (unless the filter names outcomes),
    /// most first.
    pub async fn top_denied_addresses(
        &self,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, Error> {
        let refusals: Vec<Outcome> = Outcome::ALL
            .into_iter()
            .filter(|o| *o != Outcome::Success)
            .collect();
        self.top_by("ip", filter, &refusals, limit)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|(k, n)| (k.unwrap_or_default(), n))
                    .collect()
            })
    }

    async fn top_by(
        &self,
        column: &str,
        filter: &EventFilter,
        outcomes: &[Outcome],
        limit: i64,
    ) -> Result<Vec<(Option<String>, i64)>, Error> {
        let mut w = Where::of(filter);
        w.outcomes_unless_given(filter, outcomes);
        let limit = w.param(Param::Int(limit.max(0)));
        let sql = format!(
            "SELECT {column}, COUNT(*) AS n FROM login_events{} GROUP BY {column} \
             ORDER BY n DESC, {column} LIMIT {limit}",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        counts(&rows)
    }

    /// The flagged sign-ins among the events matching `filter`: `(flagged, new country, new
    /// device)`; a sign-in new on both counts is counted once in `flagged` and once in each kind.
    pub async fn login_event_anomalies(
        &self,
        filter: &EventFilter,
    ) -> Result<(i64, i64, i64), Error> {
        let mut w = Where::of(filter);
        if !filter.anomaly {
            w.clauses
                .push(format!("outcome = '{SUCCESS}' AND {FLAGGED}"));
        }
        // COUNT, not SUM: PostgreSQL sums BIGINTs to NUMERIC, which the Any driver cannot read.
        let sql = format!(
            "SELECT COUNT(*) AS flagged, COUNT(CASE WHEN new_country = 1 THEN 1 END) AS countries, \
             COUNT(CASE WHEN new_device = 1 THEN 1 END) AS devices FROM login_events{}",
            w.sql()
        );
        let row = w
            .bind(sqlx::query(&sql))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok((
            row.try_get::<i64, _>("flagged").map_err(db_error)?,
            row.try_get::<i64, _>("countries").map_err(db_error)?,
            row.try_get::<i64, _>("devices").map_err(db_error)?,
        ))
    }

    /// Events per country, browser, OS or device class (`None`: unknown), most first.
    pub async fn login_events_by(
        &self,
        filter: &EventFilter,
        dimension: Dimension,
    ) -> Result<Vec<(Option<String>, i64)>, Error> {
        let w = Where::of(filter);
        let column = dimension.column();
        let sql = format!(
            "SELECT {column}, COUNT(*) AS n FROM login_events{} GROUP BY {column} \
             ORDER BY n DESC, {column}",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        counts(&rows)
    }
}
