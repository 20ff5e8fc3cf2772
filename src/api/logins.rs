//! Login monitoring: the latest sign-in events (JSON or CSV) and the dashboard's aggregates, with the
//! same filters as the console's `/admin/logins` page (which reads these endpoints).
//!
//! Super and org admins read every event; an app admin reads only the events whose SP is one of
//! theirs (so never the plain login form's events, which have no SP); helpdesk admins are refused:
//! the events show every user's addresses, locations and devices, which their support work does not
//! need ([`Action::ReadLogins`]).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{authorize, Action, Actor};
use super::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::events::dashboard::{bucket_for, summary, Summary};
use crate::events::query::{export_csv, Bucket, EventFilter, MAX_EXPORT_ROWS};
use crate::events::{Kind, Outcome, StoredEvent};
use crate::web::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_logins))
        .routes(routes!(login_summary))
}

/// Which events: every parameter narrows, none given means all events the caller may see.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginsQuery {
    /// Exactly this username (as typed at sign-in).
    pub user: Option<String>,
    /// One outcome or several separated by commas: success, unknown_user, wrong_password, ip_denied,
    /// mfa_failed, mfa_not_enrolled, locked_out, deactivated, app_not_assigned, policy_not_met,
    /// request_invalid.
    pub outcome: Option<String>,
    /// `sign_in` or `sso`.
    pub kind: Option<String>,
    /// From this time on (inclusive): RFC 3339, `YYYY-MM-DDTHH:MM[:SS]` (UTC) or `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Before this time (exclusive), same forms as `from`.
    pub to: Option<String>,
    /// A client address, or a network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`).
    pub address: Option<String>,
    /// Exactly this SP (entityID).
    pub sp: Option<String>,
    /// Exactly this country code (or `private`, `loopback`).
    pub country: Option<String>,
    /// `true`: only the sign-ins flagged as anomalies (a success from a country or a device never
    /// seen for that user); `false` (default): every event.
    pub anomaly: Option<String>,
    /// List: how many events, newest first (1 to 1000, default 100; CSV: 1 to 100000, default
    /// 10000).
    pub limit: Option<i64>,
    /// List: `json` (default) or `csv` (an attachment, formula-looking cells defused).
    pub format: Option<String>,
    /// Summary: `hour` or `day`; default hours for a range of up to 3 days, else days.
    pub bucket: Option<String>,
}

impl LoginsQuery {
    /// The filter these parameters describe, narrowed to what `actor` may see.
    pub fn filter(&self, actor: &Actor) -> Result<EventFilter, ApiError> {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        let mut outcomes = Vec::new();
        for word in text(&self.outcome).iter().flat_map(|t| t.split(',')) {
            let word = word.trim();
            if word.is_empty() {
                continue;
            }
            let outcome = Outcome::parse(word).ok_or_else(|| {
                let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                ApiError::invalid(format!(
                    "unknown outcome {word:?}; use one of {}",
                    all.join(", ")
                ))
            })?;
            if !outcomes.contains(&outcome) {
                outcomes.push(outcome);
            }
        }
        let kind = match text(&self.kind).as_deref() {
            None => None,
            Some("sign_in") => Some(Kind::SignIn),
            Some("sso") => Some(Kind::Sso),
            Some(_) => return Err(ApiError::invalid("kind must be sign_in or sso")),
        };
        let address = match text(&self.address) {
            None => None,
            Some(a) => Some(parse_address(&a).ok_or_else(|| {
                ApiError::invalid("address must be an IP address or a CIDR network")
            })?),
        };
        let from_ms = text(&self.from)
            .map(|t| parse_time(&t).ok_or_else(|| bad_time("from")))
            .transpose()?;
        let to_ms = text(&self.to)
            .map(|t| parse_time(&t).ok_or_else(|| bad_time("to")))
            .transpose()?;
        let anomaly = match text(&self.anomaly).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::invalid("anomaly must be true or false")),
        };
        let visible_sps = if actor.is_org_wide() {
            None
        } else {
            Some(actor.app_sps().into_iter().map(str::to_owned).collect())
        };
        Ok(EventFilter {
            username: text(&self.user),
            outcomes,
            kind,
            from_ms,
            to_ms,
            address,
            sp: text(&self.sp),
            country: text(&self.country),
            anomaly,
            visible_sps,
        })
    }
}

fn bad_time(which: &str) -> ApiError {
    ApiError::invalid(format!(
        "{which} must be RFC 3339, YYYY-MM-DDTHH:MM[:SS] (UTC) or YYYY-MM-DD"
    ))
}

/// An address (a /32 or /128) or a CIDR network.
fn parse_address(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Unix milliseconds of RFC 3339, a date and time without zone (UTC, as an HTML `datetime-local`
/// field sends it) or a date (its midnight, UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// One sign-in attempt or SSO as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginEventOut {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// `sign_in` or `sso`.
    pub kind: String,
    pub username: String,
    pub outcome: String,
    pub reason: String,
    /// The IP rule(s) or policy that refused.
    pub rule: Option<String>,
    pub ip: String,
    pub country: Option<String>,
    pub city: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
    /// The SP's entityID, when an SP was involved.
    pub sp: Option<String>,
    /// A success from a country never seen on the user's earlier successes.
    pub new_country: bool,
    /// A success from a (browser, OS) never seen on the user's earlier successes.
    pub new_device: bool,
}

impl From<StoredEvent> for LoginEventOut {
    fn from(e: StoredEvent) -> Self {
        LoginEventOut {
            id: e.id,
            at: e.at,
            kind: e.kind,
            username: e.username,
            outcome: e.outcome,
            reason: e.reason,
            rule: e.rule,
            ip: e.ip,
            country: e.country,
            city: e.city,
            browser: e.browser,
            os: e.os,
            device: e.device,
            sp: e.sp,
            new_country: e.new_country,
            new_device: e.new_device,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/logins", tag = "login monitoring", params(LoginsQuery),
    responses(
        (status = 200, content(
            ([LoginEventOut] = "application/json"),
            (String = "text/csv"))),
        (status = "4XX", body = ErrorBody)))]
/// The latest sign-in events matching the filters, newest first; `format=csv` for a CSV download.
async fn list_logins(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<LoginsQuery>,
) -> Result<Response, ApiError> {
    authorize(&idp, &actor, Action::ReadLogins).await?;
    let filter = query.filter(&actor)?;
    match query.format.as_deref().unwrap_or("json") {
        "json" => {
            let limit = query.limit.unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Err(ApiError::invalid("limit must be 1 to 1000"));
            }
            let events = idp.directory.latest_login_events(&filter, limit).await?;
            let events: Vec<LoginEventOut> = events.into_iter().map(Into::into).collect();
            Ok(ApiJson(events).into_response())
        }
        "csv" => {
            let limit = query.limit.unwrap_or(10_000);
            if !(1..=MAX_EXPORT_ROWS).contains(&limit) {
                return Err(ApiError::invalid(format!(
                    "limit must be 1 to {MAX_EXPORT_ROWS} for CSV"
                )));
            }
            let csv = export_csv(&idp.directory, &filter, limit).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"tessera-logins.csv\"",
                    ),
                ],
                csv,
            )
                .into_response())
        }
        _ => Err(ApiError::invalid("format must be json or csv")),
    }
}

#[utoipa::path(get, path = "/api/v1/logins/summary", tag = "login monitoring",
    params(LoginsQuery),
    responses((status = 200, body = Summary), (status = "4XX", body = ErrorBody)))]
/// The dashboard's aggregates of the matching events: attempts over time by outcome, totals, top
/// failing users, top denied addresses, countries, browsers, operating systems and devices, and
/// the anomalies (successful sign-ins from a new country or device) by kind.
async fn login_summary(
    State(idp): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<LoginsQuery>,
) -> Result<ApiJson<Summary>, ApiError> {
    authorize(&idp, &actor, Action::ReadLogins).await?;
    let filter = query.filter(&actor)?;
    let bucket = match query.bucket.as_deref() {
        None | Some("") => bucket_for(&filter, chrono::Utc::now().timestamp_millis()),
        Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(_) => return Err(ApiError::invalid("bucket must be hour or day")),
    };
    Ok(ApiJson(summary(&idp.directory, &filter, bucket).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_and_addresses_in_the_accepted_forms() {
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01T01:00"), Some(3_600_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("1970-01-01T02:00:00+01:00"), Some(3_600_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(
            parse_address("10.1.2.3"),
            Some("10.1.2.3/32".parse().unwrap())
        );
        assert!(parse_address("10.0.0.0/8").is_some());
        assert!(parse_address("10.0.0.0/33").is_none());
    }
}
