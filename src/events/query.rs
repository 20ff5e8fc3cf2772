//! What the login-monitoring dashboard asks: the filter every query takes, the time buckets and
//! breakdowns, and the CSV export. The SQL lives with the table (`directory/login_events.rs`).
//!
//! App admins see only the events of their SPs: they query with [`EventFilter::visible_sps`] set, so
//! events without an SP (the login form) and of other SPs are never returned to them.

use ipnet::IpNet;

use super::{Kind, Outcome, StoredEvent};
use crate::directory::{Directory, Error};

/// Which events a dashboard query looks at. Every field narrows; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Exactly this username (as typed or as known).
    pub username: Option<String>,
    /// Any of these outcomes; empty: any outcome.
    pub outcomes: Vec<Outcome>,
    /// Only sign-ins or only SSOs.
    pub kind: Option<Kind>,
    /// From this time on (unix ms, inclusive).
    pub from_ms: Option<i64>,
    /// Before this time (unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// Client address inside this network (a single address is a /32 or /128).
    pub address: Option<IpNet>,
    /// Exactly this SP.
    pub sp: Option<String>,
    /// Exactly this country code (or `private` / `loopback`).
    pub country: Option<String>,
    /// Only the flagged sign-ins (issue #7): successes from a new country or a new device.
    pub anomaly: bool,
    /// The SPs the viewer may see (an app admin's); `None`: every event.
    pub visible_sps: Option<Vec<String>>,
}

/// The width of a bucket of [`Directory::login_events_over_time`] (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    /// The width in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }
}

/// A breakdown of [`Directory::login_events_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Country,
    Browser,
    Os,
    Device,
}

impl Dimension {
    /// The column grouped by (a constant, never user input).
    pub fn column(self) -> &'static str {
        match self {
            Dimension::Country => "country",
            Dimension::Browser => "browser",
            Dimension::Os => "os",
            Dimension::Device => "device",
        }
    }
}

/// The most rows one CSV export carries.
pub const MAX_EXPORT_ROWS: i64 = 100_000;

/// The header of the CSV export.
const CSV_HEADER: [&str; 17] = [
    "time_utc",
    "kind",
    "username",
    "outcome",
    "reason",
    "rule",
    "ip",
    "country",
    "city",
    "browser",
    "os",
    "device",
    "sp",
    "new_country",
    "new_device",
    "user_agent",
    "at_ms",
];

/// A cell as written to CSV: a value a spreadsheet would run as a formula (starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) is prefixed with `'` (OWASP "CSV injection").
pub fn csv_cell(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_owned(),
    }
}

/// Writes `events` as CSV (RFC 4180 quoting by the `csv` crate, formula-looking cells defused).
/// Every cell is quoted: a spreadsheet in a locale whose separator is `;` would otherwise split an
/// unquoted `a;=cmd` and run the `=cmd` part as a formula.
pub fn write_csv(events: &[StoredEvent], out: impl std::io::Write) -> std::io::Result<()> {
    let mut writer = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(out);
    let io = |e: csv::Error| std::io::Error::other(e.to_string());
    writer.write_record(CSV_HEADER).map_err(io)?;
    for e in events {
        let time = chrono::DateTime::from_timestamp_millis(e.at)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let record = [
            time,
            e.kind.clone(),
            e.username.clone(),
            e.outcome.clone(),
            e.reason.clone(),
            opt(&e.rule),
            e.ip.clone(),
            opt(&e.country),
            opt(&e.city),
            opt(&e.browser),
            opt(&e.os),
            opt(&e.device),
            opt(&e.sp),
            e.new_country.to_string(),
            e.new_device.to_string(),
            opt(&e.user_agent),
            e.at.to_string(),
        ];
        writer
            .write_record(record.iter().map(|v| csv_cell(v)))
            .map_err(io)?;
    }
    writer.flush()
}

/// The CSV export of the latest events matching `filter` (at most `limit`, capped at
/// [`MAX_EXPORT_ROWS`]), newest first.
pub async fn export_csv(
    directory: &Directory,
    filter: &EventFilter,
    limit: i64,
) -> Result<String, Error> {
    let events = directory
        .latest_login_events(filter, limit.clamp(0, MAX_EXPORT_ROWS))
        .await?;
    let mut out = Vec::new();
    write_csv(&events, &mut out).map_err(|e| Error::CorruptRow(e.to_string()))?;
    String::from_utf8(out).map_err(|e| Error::CorruptRow(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn formula_cells_are_defused_and_quoted() {
        let event = StoredEvent {
            id: 1,
            at: 0,
            kind: "sign_in".into(),
            username: "=HYPERLINK(\"http://evil\",\"x\")".into(),
            user_id: None,
            ip: "203.0.113.7".into(),
            sp: None,
            outcome: "unknown_user".into(),
            reason: "a, \"quoted\"\nline".into(),
            rule: None,
            country: None,
            city: Some("x;=cmd|' /C calc'!A0".into()),
            browser: None,
            os: None,
            device: None,
            user_agent: Some("@SUM(1)".into()),
            new_country: false,
            new_device: false,
        };
        let mut out = Vec::new();
        write_csv(&[event], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("\"time_utc\",\"kind\",\"username\","),
            "{text}"
        );
        // Quoted, so a `;`-separated spreadsheet keeps it one cell.
        assert!(text.contains(",\"x;=cmd|' /C calc'!A0\","), "{text}");
        assert!(text.contains(",\"203.0.113.7\","), "{text}");
        assert!(
            text.contains("\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\""),
            "{text}"
        );
        assert!(text.contains("\"a, \"\"quoted\"\"\nline\""), "{text}");
        assert!(text.contains("'@SUM(1)"), "{text}");
        assert!(!text.contains(",=") && !text.contains(",@"), "{text}");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[2], "'=HYPERLINK(\"http://evil\",\"x\")");
        assert_eq!(&row[4], "a, \"quoted\"\nline");
        assert_eq!(&row[8], "x;=cmd|' /C calc'!A0");
    }
}
