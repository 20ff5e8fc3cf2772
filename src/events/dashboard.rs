//! The login-monitoring dashboard's aggregates in one answer: attempts per hour or day by outcome,
//! totals by outcome, top failing users, top denied addresses, the breakdowns by country,
//! browser, OS and device class, and the anomalies (sign-ins from a new country or device). Built from the queries of [`super::query`] (the SQL lives with the
//! table); the admin API's `GET /api/v1/logins/summary` returns it and the console page draws it.

use serde::{Deserialize, Serialize};

use super::query::{Bucket, Dimension, EventFilter};
use super::Outcome;
use crate::directory::{Directory, Error};

/// How many rows the "top" tables and the breakdowns carry.
pub const TOP_ROWS: i64 = 10;

/// Up to this span the chart counts per hour, beyond it per day.
pub const HOURLY_UP_TO_MS: i64 = 3 * 86_400_000;

/// One count of a table: what (`None`: unknown, e.g. no GeoIP entry) and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Count {
    pub key: Option<String>,
    pub count: i64,
}

/// The attempts of one time bucket, by outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimeBucket {
    /// The bucket's start, unix milliseconds (UTC hours or days).
    pub start_ms: i64,
    /// Outcome (stored form) and count; outcomes with no attempt are left out.
    pub counts: Vec<Count>,
}

/// The successful sign-ins flagged as anomalies (issue #7): from a country or a device never seen on
/// the user's earlier successes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Anomalies {
    /// Flagged sign-ins, each counted once (new on both counts included).
    pub flagged: i64,
    /// Sign-ins from a country new for the user.
    pub new_country: i64,
    /// Sign-ins from a device (browser + OS) new for the user.
    pub new_device: i64,
}

/// Everything the dashboard shows above the event table, for one [`EventFilter`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// `hour` or `day`: the width of [`Summary::over_time`]'s buckets.
    pub bucket: String,
    /// All matching attempts.
    pub total: i64,
    /// Matching attempts per outcome (stored form), in [`Outcome::ALL`]'s order, zero counts left out.
    pub by_outcome: Vec<Count>,
    /// Attempts per bucket and outcome, oldest first, empty buckets left out.
    pub over_time: Vec<TimeBucket>,
    /// Usernames with the most failed credentials (unknown user, wrong password, failed second
    /// factor, locked out), most first.
    pub top_failing_users: Vec<Count>,
    /// Client addresses with the most refusals of any kind, most first.
    pub top_denied_addresses: Vec<Count>,
    /// Attempts per country code (`private`, `loopback` for such addresses).
    pub countries: Vec<Count>,
    pub browsers: Vec<Count>,
    pub operating_systems: Vec<Count>,
    /// Attempts per device class (desktop, smartphone, ...).
    pub devices: Vec<Count>,
    /// The flagged sign-ins among the matching attempts, by kind.
    pub anomalies: Anomalies,
}

impl Summary {
    /// The count of `outcome` (0 when absent).
    pub fn outcome(&self, outcome: Outcome) -> i64 {
        self.by_outcome
            .iter()
            .find(|c| c.key.as_deref() == Some(outcome.as_str()))
            .map_or(0, |c| c.count)
    }
}

/// The bucket that suits `filter`'s time range: hours for up to [`HOURLY_UP_TO_MS`], else days (an
/// open range, i.e. no `from`, is counted per day).
pub fn bucket_for(filter: &EventFilter, now_ms: i64) -> Bucket {
    match filter.from_ms {
        Some(from) if filter.to_ms.unwrap_or(now_ms) - from <= HOURLY_UP_TO_MS => Bucket::Hour,
        _ => Bucket::Day,
    }
}

/// The stored name of a bucket width.
pub fn bucket_name(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Hour => "hour",
        Bucket::Day => "day",
    }
}

/// Where an outcome's stored form sorts: [`Outcome::ALL`]'s order, unknown words after, by name.
fn rank(outcome: &str) -> (usize, String) {
    let position = Outcome::parse(outcome)
        .and_then(|k| Outcome::ALL.iter().position(|a| *a == k))
        .unwrap_or(Outcome::ALL.len());
    (position, outcome.to_owned())
}

/// The dashboard's aggregates of the events matching `filter`.
pub async fn summary(
    directory: &Directory,
    filter: &EventFilter,
    bucket: Bucket,
) -> Result<Summary, Error> {
    let rows = directory.login_events_over_time(filter, bucket).await?;
    let mut over_time: Vec<TimeBucket> = Vec::new();
    let mut totals: Vec<(String, i64)> = Vec::new();
    for (start_ms, outcome, n) in rows {
        match over_time.last_mut() {
            Some(last) if last.start_ms == start_ms => {}
            _ => over_time.push(TimeBucket {
                start_ms,
                counts: Vec::new(),
            }),
        }
        if let Some(last) = over_time.last_mut() {
            last.counts.push(Count {
                key: Some(outcome.clone()),
                count: n,
            });
        }
        match totals.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, total)) => *total += n,
            None => totals.push((outcome, n)),
        }
    }
    // Known outcomes in their fixed order (success first: the bottom of a stacked bar), then any
    // other stored word (older rows) by name.
    totals.sort_by_key(|(o, _)| rank(o));
    for bucket in &mut over_time {
        bucket
            .counts
            .sort_by_key(|c| rank(c.key.as_deref().unwrap_or_default()));
    }
    let total = totals.iter().map(|(_, n)| n).sum();
    let by_outcome = totals
        .into_iter()
        .map(|(o, n)| Count {
            key: Some(o),
            count: n,
        })
        .collect();
    let named = |rows: Vec<(String, i64)>| {
        rows.into_iter()
            .map(|(k, n)| Count {
                key: Some(k),
                count: n,
            })
            .collect::<Vec<_>>()
    };
    let top_failing_users = named(directory.top_failing_users(filter, TOP_ROWS).await?);
    let top_denied_addresses = named(directory.top_denied_addresses(filter, TOP_ROWS).await?);
    let mut by = Vec::new();
    for dimension in [
        Dimension::Country,
        Dimension::Browser,
        Dimension::Os,
        Dimension::Device,
    ] {
        let rows = directory.login_events_by(filter, dimension).await?;
        by.push(
            rows.into_iter()
                .take(TOP_ROWS as usize)
                .map(|(key, count)| Count { key, count })
                .collect::<Vec<_>>(),
        );
    }
    let (flagged, new_country, new_device) = directory.login_event_anomalies(filter).await?;
    let mut by = by.into_iter();
    let mut next = || by.next().unwrap_or_default();
    Ok(Summary {
        bucket: bucket_name(bucket).to_owned(),
        total,
        by_outcome,
        over_time,
        top_failing_users,
        top_denied_addresses,
        countries: next(),
        browsers: next(),
        operating_systems: next(),
        devices: next(),
        anomalies: Anomalies {
            flagged,
            new_country,
            new_device,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ranges_are_hourly_and_open_ones_daily() {
        let now = 10 * 86_400_000;
        let mut f = EventFilter::default();
        assert_eq!(bucket_for(&f, now), Bucket::Day);
        f.from_ms = Some(now - 86_400_000);
        assert_eq!(bucket_for(&f, now), Bucket::Hour);
        f.from_ms = Some(now - 4 * 86_400_000);
        assert_eq!(bucket_for(&f, now), Bucket::Day);
        f.to_ms = Some(now - 3 * 86_400_000);
        assert_eq!(bucket_for(&f, now), Bucket::Hour);
    }
}
