//! What an event says about where and from what a person signed in: the location of the client address
//! (a MaxMind-format city database, when one is configured) and the device (browser, OS and device
//! class parsed from the User-Agent). Both run in the recorder's writer task, off the sign-in path,
//! except when a security policy must decide on a new device or country at sign-in.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// The country label of loopback addresses (never looked up).
pub const LOOPBACK: &str = "loopback";
/// The country label of private, link-local and other non-routable addresses (never looked up).
pub const PRIVATE: &str = "private";

/// Where an address is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2 code, or [`LOOPBACK`] / [`PRIVATE`]; `None` when unknown.
    pub country: Option<String>,
    /// The city's English name, when the database has one.
    pub city: Option<String>,
}

/// What a User-Agent says about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// Browser family, e.g. `Chrome`, `Firefox`, `Safari`.
    pub browser: Option<String>,
    /// Operating system, e.g. `Windows 10`, `Mac OSX`, `Linux`, `iPhone`.
    pub os: Option<String>,
    /// `desktop`, `mobile`, `phone`, `appliance`, `crawler` or `other`.
    pub class: Option<String>,
}

/// Why the GeoIP database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path}: {message}")]
pub struct GeoError {
    /// The configured path.
    pub path: String,
    /// What the reader said.
    pub message: String,
}

/// Looks addresses and User-Agents up. Shared by the writer task and the sign-in path (`Arc`).
pub struct Enricher {
    /// The city database; `None` when none is configured (only the address labels are given then).
    geo: Option<maxminddb::Reader<Vec<u8>>>,
    /// The User-Agent parser (its tables are built once).
    ua: woothee::parser::Parser,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("geo", &self.geo.is_some())
            .finish_non_exhaustive()
    }
}

/// The parts of a city record Tessera reads. Two layouts are common: MaxMind's GeoIP2/GeoLite2 City
/// (`country.iso_code`, `city.names.en`) and the flat one of the ip-location-db packages
/// (`country_code`, `city` as a string); both are accepted.
#[derive(Debug, Deserialize)]
struct CityRecord {
    #[serde(default)]
    country: Option<serde_json::Value>,
    #[serde(default)]
    city: Option<serde_json::Value>,
    #[serde(default)]
    country_code: Option<String>,
}

impl CityRecord {
    fn location(self) -> Location {
        let country = self.country_code.or_else(|| {
            self.country
                .as_ref()
                .and_then(|c| c.get("iso_code"))
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        });
        let city = match self.city {
            Some(serde_json::Value::String(name)) => Some(name),
            Some(other) => other
                .get("names")
                .and_then(|n| n.get("en"))
                .and_then(|n| n.as_str())
                .map(str::to_owned),
            None => None,
        };
        Location {
            country: country.filter(|c| !c.is_empty()),
            city: city.filter(|c| !c.is_empty()),
        }
    }
}

impl Enricher {
    /// An enricher without a location database.
    pub fn without_geo() -> Self {
        Enricher {
            geo: None,
            ua: woothee::parser::Parser::new(),
        }
    }

    /// Opens the city database at `path` (read into memory once).
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| GeoError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Enricher {
            geo: Some(reader),
            ua: woothee::parser::Parser::new(),
        })
    }

    /// Whether a location database is loaded.
    pub fn has_geo(&self) -> bool {
        self.geo.is_some()
    }

    /// Where `ip` is: a label for loopback and private addresses, else what the database says.
    pub fn locate(&self, ip: IpAddr) -> Location {
        let ip = ip.to_canonical();
        if let Some(label) = address_label(ip) {
            return Location {
                country: Some(label.to_owned()),
                city: None,
            };
        }
        let Some(reader) = &self.geo else {
            return Location::default();
        };
        match reader.lookup(ip).and_then(|r| r.decode::<CityRecord>()) {
            Ok(Some(record)) => record.location(),
            Ok(None) => Location::default(),
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP lookup failed");
                Location::default()
            }
        }
    }

    /// The device a User-Agent describes; all `None` for an empty or unrecognised one.
    pub fn device(&self, user_agent: &str) -> Device {
        let Some(parsed) = self.ua.parse(user_agent) else {
            return Device::default();
        };
        let known = |s: &str| (!s.is_empty() && s != "UNKNOWN").then(|| s.to_owned());
        let class = match parsed.category {
            "pc" => "desktop",
            "smartphone" => "mobile",
            "mobilephone" => "phone",
            "appliance" => "appliance",
            "crawler" => "crawler",
            "UNKNOWN" | "" => return Device::default(),
            _ => "other",
        };
        Device {
            browser: known(parsed.name),
            os: known(parsed.os),
            class: Some(class.to_owned()),
        }
    }
}

/// The label of an address that is not worth looking up: loopback, or private / link-local /
/// unique-local / shared (CGNAT) space.
pub fn address_label(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some(LOOPBACK)
            } else if v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                // 100.64.0.0/10, shared address space (RFC 6598).
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
            {
                Some(PRIVATE)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some(LOOPBACK)
            } else if v6.is_unspecified()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
            {
                Some(PRIVATE)
            } else {
                None
            }
        }
    }
}

/// The address as 32 lowercase hex digits of its IPv6 form (IPv4 mapped to `::ffff:a.b.c.d`), so
/// that addresses sort numerically as text and a range is a `BETWEEN`.
pub fn ip_hex(ip: IpAddr) -> String {
    let v6 = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    hex::encode(v6.octets())
}

/// The first and last [`ip_hex`] of a network.
pub fn net_hex_range(net: &ipnet::IpNet) -> (String, String) {
    (ip_hex(net.network()), ip_hex(net.broadcast()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_and_hex() {
        for (ip, label) in [
            ("127.0.0.1", Some(LOOPBACK)),
            ("::1", Some(LOOPBACK)),
            ("::ffff:127.0.0.1", Some(LOOPBACK)),
            ("10.1.2.3", Some(PRIVATE)),
            ("192.168.0.1", Some(PRIVATE)),
            ("169.254.1.1", Some(PRIVATE)),
            ("100.64.0.1", Some(PRIVATE)),
            ("fd00::1", Some(PRIVATE)),
            ("fe80::1", Some(PRIVATE)),
            ("203.0.113.7", None),
            ("2001:db8::1", None),
        ] {
            assert_eq!(address_label(ip.parse().unwrap()), label, "{ip}");
        }
        assert_eq!(
            ip_hex("203.0.113.7".parse().unwrap()),
            "00000000000000000000ffffcb007107"
        );
        assert_eq!(
            ip_hex("::ffff:203.0.113.7".parse().unwrap()),
            ip_hex("203.0.113.7".parse().unwrap())
        );
        let (lo, hi) = net_hex_range(&"203.0.113.0/24".parse().unwrap());
        assert!(lo <= ip_hex("203.0.113.7".parse().unwrap()));
        assert!(hi >= ip_hex("203.0.113.255".parse().unwrap()));
        assert!(hi < ip_hex("203.0.114.0".parse().unwrap()));
    }

    #[test]
    fn user_agents_are_parsed() {
        let e = Enricher::without_geo();
        let d = e.device(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36",
        );
        assert_eq!(d.browser.as_deref(), Some("Chrome"));
        assert_eq!(d.os.as_deref(), Some("Windows 10"));
        assert_eq!(d.class.as_deref(), Some("desktop"));
        let d = e.device(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
             (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(d.class.as_deref(), Some("mobile"));
        assert_eq!(e.device(""), Device::default());
    }
}
