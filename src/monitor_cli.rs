//! `tessera user unlock`, `tessera unlock-address` and `tessera events ...`: the administrator's side
//! of login monitoring until the admin console shows it.

use std::net::IpAddr;

use clap::{Args, Subcommand};
use ipnet::IpNet;
use tessera::config::Config;
use tessera::events::query::{export_csv, EventFilter};
use tessera::events::{lockout, Kind, Outcome};

#[derive(Subcommand)]
pub enum EventsCommand {
    /// The latest events, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// The matching events as CSV on standard output.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (newest first).
        #[arg(long, default_value_t = 10_000)]
        limit: i64,
    },
}

#[derive(Args)]
pub struct FilterArgs {
    /// Only this username.
    #[arg(long)]
    user: Option<String>,
    /// Only these outcomes (repeat): success, unknown_user, wrong_password, ip_denied, ...
    #[arg(long = "outcome", value_parser = parse_outcome)]
    outcomes: Vec<Outcome>,
    /// Only sign-ins (`sign_in`) or SSOs (`sso`).
    #[arg(long, value_parser = parse_kind)]
    kind: Option<Kind>,
    /// Only the last this many hours.
    #[arg(long)]
    hours: Option<i64>,
    /// Only client addresses in this network (or this address).
    #[arg(long, value_parser = parse_net)]
    address: Option<IpNet>,
    /// Only this SP (entityID).
    #[arg(long)]
    sp: Option<String>,
    /// Only this country code (or `private`, `loopback`).
    #[arg(long)]
    country: Option<String>,
}

fn parse_outcome(s: &str) -> Result<Outcome, String> {
    Outcome::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        format!("unknown outcome {s:?}; one of {}", all.join(", "))
    })
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s {
        "sign_in" => Ok(Kind::SignIn),
        "sso" => Ok(Kind::Sso),
        _ => Err(format!("unknown kind {s:?}; sign_in or sso")),
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an address nor a network"))
}

impl FilterArgs {
    fn filter(self) -> EventFilter {
        EventFilter {
            username: self.user,
            outcomes: self.outcomes,
            kind: self.kind,
            from_ms: self
                .hours
                .map(|h| chrono::Utc::now().timestamp_millis() - h.saturating_mul(3_600_000)),
            to_ms: None,
            address: self.address.map(|n| n.trunc()),
            sp: self.sp,
            country: self.country,
            anomaly: false,
            visible_sps: None,
        }
    }
}

pub async fn unlock_user(config: &Config, username: &str) -> Result<(), String> {
    let store = super::session_store(config).await?;
    lockout::unlock_user(&store, username)
        .await
        .map_err(|e| e.to_string())?;
    println!("sign-in lockout of {username} lifted");
    Ok(())
}

pub async fn unlock_address(config: &Config, ip: IpAddr) -> Result<(), String> {
    let store = super::session_store(config).await?;
    lockout::unlock_address(&store, ip)
        .await
        .map_err(|e| e.to_string())?;
    println!("sign-in lockout of {ip} lifted");
    Ok(())
}

pub async fn events(config: &Config, command: EventsCommand) -> Result<(), String> {
    let directory = super::directory(config).await?;
    match command {
        EventsCommand::List { filter, limit } => {
            let events = directory
                .latest_login_events(&filter.filter(), limit)
                .await
                .map_err(|e| e.to_string())?;
            for e in events {
                let time = chrono::DateTime::from_timestamp_millis(e.at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let mut flags = Vec::new();
                if e.new_country {
                    flags.push("new country");
                }
                if e.new_device {
                    flags.push("new device");
                }
                println!(
                    "{time}\t{}\t{}\t{}\t{}\t{}/{}\t{} {} ({})\t{}\t{}{}",
                    e.kind,
                    e.outcome,
                    if e.username.is_empty() {
                        "-"
                    } else {
                        &e.username
                    },
                    e.ip,
                    e.country.as_deref().unwrap_or("?"),
                    e.city.as_deref().unwrap_or("?"),
                    e.browser.as_deref().unwrap_or("?"),
                    e.os.as_deref().unwrap_or("?"),
                    e.device.as_deref().unwrap_or("?"),
                    e.sp.as_deref().unwrap_or("-"),
                    e.reason,
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!("\t[{}]", flags.join(", "))
                    },
                );
            }
            Ok(())
        }
        EventsCommand::Export { filter, limit } => {
            let csv = export_csv(&directory, &filter.filter(), limit)
                .await
                .map_err(|e| e.to_string())?;
            print!("{csv}");
            Ok(())
        }
    }
}
