//! The login-monitoring dashboard (`/admin/logins`): attempts over time by outcome as an inline SVG
//! bar chart drawn on the server (no script), the top failing users and denied addresses, countries,
//! browsers, operating systems and devices, the sign-ins flagged as anomalies (new country, new
//! device: a tile with the counts and badges in the event table), and the latest events, all for the
//! filters of a GET form.
//!
//! Like every console page it reads the admin API (`/logins/summary` and `/logins`) with the admin's
//! session, so an app admin sees exactly what the API shows them: their SPs' events only. The CSV
//! link is the API's `?format=csv` with the same filters. Without a `from` in the address the page
//! shows the last 24 hours.

use askama::Template;
use axum::extract::RawQuery;
use axum::response::Response;

use super::{Console, Flash, Layout, Section};
use crate::api::logins::{parse_time, LoginEventOut};
use crate::events::dashboard::{Anomalies, Count, Summary};
use crate::events::Outcome;

/// How many events the table shows.
const TABLE_ROWS: i64 = 100;
/// The default period of the page.
const DEFAULT_PERIOD_MS: i64 = 86_400_000;
/// Beyond this many buckets the chart shows only those with attempts (no empty ones in between).
const MAX_CHART_BARS: i64 = 400;
/// The chart's drawing area, in SVG units.
const CHART_WIDTH: i64 = 720;
const CHART_HEIGHT: i64 = 200;
const CHART_LEFT: i64 = 40;
const CHART_TOP: i64 = 10;

/// A colour per outcome, in [`Outcome::ALL`]'s order (distinguishable, success green).
const COLOURS: [&str; 11] = [
    "#2e8b57", "#c0392b", "#e67e22", "#8e44ad", "#d35400", "#7f8c8d", "#6d1a1a", "#34495e",
    "#2980b9", "#b7950b", "#95a5a6",
];

fn colour(outcome: &str) -> &'static str {
    Outcome::ALL
        .iter()
        .position(|o| o.as_str() == outcome)
        .and_then(|i| COLOURS.get(i))
        .copied()
        .unwrap_or("#555555")
}

/// The values of the filter form, as typed.
#[derive(Default)]
struct FormValues {
    user: String,
    outcome: String,
    kind: String,
    from: String,
    to: String,
    address: String,
    sp: String,
    country: String,
    /// `only flagged sign-ins` is ticked (`anomaly=true`).
    anomaly: bool,
}

/// One coloured part of a bar.
struct Segment {
    y: i64,
    height: i64,
    colour: &'static str,
    outcome: String,
    count: i64,
    title: String,
}

/// One time bucket of the chart.
struct Bar {
    x: i64,
    width: i64,
    segments: Vec<Segment>,
    /// The axis label under the bar, when it gets one.
    label: Option<String>,
    label_x: i64,
}

/// The chart: bars, the y axis' top value, and the legend.
struct Chart {
    bars: Vec<Bar>,
    max: i64,
    /// Outcome and colour of every outcome present.
    legend: Vec<(String, &'static str, i64)>,
    /// "per hour" or "per day".
    per: &'static str,
}

/// One event row of the table.
struct EventRow {
    time: String,
    username: String,
    outcome: String,
    colour: &'static str,
    ip: String,
    country: String,
    sp: String,
    device: String,
    reason: String,
    /// The event's id (a row's `data-id`, the API's `id`).
    id: i64,
    /// The anomaly flags of a successful sign-in: a country / a device new for the user.
    new_country: bool,
    new_device: bool,
}

#[derive(Template)]
#[template(path = "admin_logins.html")]
struct LoginsPage {
    l: Layout,
    f: FormValues,
    /// The outcome choices, and whether each is the one filtered on.
    outcomes: Vec<(&'static str, bool)>,
    csv_href: String,
    total: i64,
    chart: Chart,
    top_users: Vec<(String, i64)>,
    top_addresses: Vec<(String, i64)>,
    countries: Vec<(String, i64)>,
    browsers: Vec<(String, i64)>,
    systems: Vec<(String, i64)>,
    devices: Vec<(String, i64)>,
    anomalies: Anomalies,
    events: Vec<EventRow>,
}

/// `GET /admin/logins`.
pub(super) async fn page(console: Console, RawQuery(raw): RawQuery) -> Response {
    if let Err(refused) = console.require(Section::Logins).await {
        return refused;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut f = FormValues::default();
    let mut from_given = false;
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = value.trim().to_owned();
        match key.as_ref() {
            "user" => f.user = value,
            "outcome" => f.outcome = value,
            "kind" => f.kind = value,
            "from" => {
                from_given = true;
                f.from = value
            }
            "to" => f.to = value,
            "address" => f.address = value,
            "sp" => f.sp = value,
            "country" => f.country = value,
            "anomaly" => f.anomaly = value == "true",
            _ => {}
        }
    }
    if !from_given {
        f.from = minute(now - DEFAULT_PERIOD_MS);
    }
    // The filters as a query string (a block: the serializer is not Send).
    let qs = {
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("user", &f.user),
            ("outcome", &f.outcome),
            ("kind", &f.kind),
            ("from", &f.from),
            ("to", &f.to),
            ("address", &f.address),
            ("sp", &f.sp),
            ("country", &f.country),
        ] {
            if !value.is_empty() {
                qs.append_pair(key, value);
            }
        }
        if f.anomaly {
            qs.append_pair("anomaly", "true");
        }
        qs.finish()
    };
    let mut flash = Flash::default();
    let summary = match console
        .get::<Summary>(&format!("/logins/summary?{qs}"))
        .await
    {
        Ok(s) => Some(s),
        Err(failure) => {
            flash = Flash::refused(failure);
            None
        }
    };
    let events = match summary {
        Some(_) => console
            .get::<Vec<LoginEventOut>>(&format!("/logins?{qs}&limit={TABLE_ROWS}"))
            .await
            .unwrap_or_else(|failure| {
                flash = Flash::refused(failure);
                Vec::new()
            }),
        None => Vec::new(),
    };
    let summary = summary.unwrap_or_else(|| Summary {
        bucket: "hour".to_owned(),
        total: 0,
        by_outcome: Vec::new(),
        over_time: Vec::new(),
        top_failing_users: Vec::new(),
        top_denied_addresses: Vec::new(),
        countries: Vec::new(),
        browsers: Vec::new(),
        operating_systems: Vec::new(),
        devices: Vec::new(),
        anomalies: Anomalies::default(),
    });
    let to = parse_time(&f.to).unwrap_or(now);
    let chart = chart(&summary, parse_time(&f.from), to);
    let pairs = |counts: &[Count]| -> Vec<(String, i64)> {
        counts
            .iter()
            .map(|c| {
                (
                    c.key.clone().unwrap_or_else(|| "unknown".to_owned()),
                    c.count,
                )
            })
            .collect()
    };
    let events = events
        .into_iter()
        .map(|e| EventRow {
            time: second(e.at),
            colour: colour(&e.outcome),
            device: [e.browser, e.os, e.device]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" · "),
            country: match (e.country, e.city) {
                (Some(c), Some(city)) => format!("{c} ({city})"),
                (Some(c), None) => c,
                _ => String::new(),
            },
            username: e.username,
            outcome: e.outcome,
            ip: e.ip,
            sp: e.sp.unwrap_or_default(),
            reason: e.reason,
            id: e.id,
            new_country: e.new_country,
            new_device: e.new_device,
        })
        .collect();
    let page = LoginsPage {
        l: console.layout(Section::Logins, &flash).await,
        outcomes: Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), o.as_str() == f.outcome))
            .collect(),
        csv_href: format!("{}/logins?{qs}&format=csv", crate::api::PREFIX),
        total: summary.total,
        top_users: pairs(&summary.top_failing_users),
        top_addresses: pairs(&summary.top_denied_addresses),
        countries: pairs(&summary.countries),
        browsers: pairs(&summary.browsers),
        systems: pairs(&summary.operating_systems),
        devices: pairs(&summary.devices),
        anomalies: summary.anomalies.clone(),
        chart,
        events,
        f,
    };
    console.page(&page, &flash)
}

/// The stacked bars of `summary.over_time`, one per bucket from `from` (or the first bucket with
/// attempts) to `to`, empty buckets included so the time axis is even.
fn chart(summary: &Summary, from: Option<i64>, to: i64) -> Chart {
    let size = if summary.bucket == "day" {
        86_400_000
    } else {
        3_600_000
    };
    let first = summary.over_time.first().map(|b| b.start_ms);
    let last = summary.over_time.last().map(|b| b.start_ms);
    let start = from.or(first).map(|s| s.div_euclid(size) * size);
    let end = last.map_or(to, |l| l.max(to));
    let starts: Vec<i64> = match start {
        Some(s) if end >= s && (end - s) / size < MAX_CHART_BARS => {
            (0..=(end - s) / size).map(|i| s + i * size).collect()
        }
        _ => summary.over_time.iter().map(|b| b.start_ms).collect(),
    };
    let max = summary
        .over_time
        .iter()
        .map(|b| b.counts.iter().map(|c| c.count).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = i64::try_from(starts.len()).unwrap_or(1).max(1);
    let slot = (CHART_WIDTH / n).max(1);
    let width = (slot * 4 / 5).max(1);
    let label_every = (n / 8).max(1);
    let mut bars = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let x = CHART_LEFT + i * slot + (slot - width) / 2;
        let mut y = CHART_TOP + CHART_HEIGHT;
        let mut segments = Vec::new();
        if let Some(bucket) = summary.over_time.iter().find(|b| b.start_ms == *start) {
            for c in &bucket.counts {
                let outcome = c.key.clone().unwrap_or_default();
                let height = (c.count * CHART_HEIGHT / max).max(1);
                y -= height;
                segments.push(Segment {
                    y,
                    height,
                    colour: colour(&outcome),
                    title: format!("{} · {outcome}: {}", bucket_label(*start, size), c.count),
                    outcome,
                    count: c.count,
                });
            }
        }
        let label = (i % label_every == 0).then(|| short_label(*start, size));
        bars.push(Bar {
            x,
            width,
            segments,
            label,
            label_x: x + width / 2,
        });
    }
    Chart {
        bars,
        max,
        legend: summary
            .by_outcome
            .iter()
            .map(|c| {
                let o = c.key.clone().unwrap_or_default();
                let col = colour(&o);
                (o, col, c.count)
            })
            .collect(),
        per: if size == 86_400_000 {
            "per day"
        } else {
            "per hour"
        },
    }
}

fn format_ms(at: i64, format: &str) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// A time as a `datetime-local` field shows it (UTC, to the minute).
fn minute(at: i64) -> String {
    format_ms(at, "%Y-%m-%dT%H:%M")
}

fn second(at: i64) -> String {
    format_ms(at, "%Y-%m-%d %H:%M:%S")
}

fn bucket_label(at: i64, size: i64) -> String {
    if size == 86_400_000 {
        format_ms(at, "%Y-%m-%d")
    } else {
        format_ms(at, "%Y-%m-%d %H:00 UTC")
    }
}

fn short_label(at: i64, size: i64) -> String {
    if size == 86_400_000 {
        format_ms(at, "%m-%d")
    } else {
        format_ms(at, "%H:00")
    }
}
