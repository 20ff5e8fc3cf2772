//! Brute-force defence: failed sign-ins per username and per client address, counted in the session
//! store so that every node sees the same counts.
//!
//! The count is taken BEFORE the password is verified, by one atomic increment that returns the new
//! value ([`SessionStore::incr_counter`]: Redis `INCR` in a Lua script, a mutex in memory). Each attempt
//! therefore holds a distinct number, and only the attempts numbered up to `lockout_after` reach the
//! password check: thirty parallel guesses cannot all read "4 failures so far" and all go through (the
//! check-then-act race ZITADEL's lockout had). A successful sign-in resets the user's
//! count; the address count is never reset by a success, so one valid account cannot launder a
//! password-spraying run (size `address_lockout_after` for the number of people behind one NAT).
//!
//! Past `slowdown_after` each attempt first waits `slowdown_ms` per attempt over the threshold (at
//! most ten times that). Past `lockout_after` (or `address_lockout_after`) the attempt is refused
//! without looking at the password, and a lock marker keeps the user (or address) locked for
//! `lockout_secs` from then, or until the counting window ends if that is later. An administrator
//! lifts it with `tessera user unlock` / `tessera unlock-address` (Redis sessions only), or with
//! `POST /api/v1/users/{username}/unlock` / `POST /api/v1/addresses/{ip}/unlock` and the console's
//! Unlock button, which reach the server's own store whatever the backend.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::LockoutConfig;
use crate::session::{Error, SessionStore};

/// Session-store namespace of the lock markers.
const LOCK_NAMESPACE: &str = "login-lock";

/// What the sign-in may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go on and check the password, after waiting `delay`.
    Proceed {
        /// The slow-down; zero below the threshold.
        delay: Duration,
    },
    /// Refuse without checking the password.
    Locked {
        /// What is locked and why, for the log and the event (never shown to the client).
        reason: String,
    },
}

fn user_key(username: &str) -> String {
    format!("login-user:{username}")
}

/// The counter key of a client address: an IPv4 address (an IPv4-mapped IPv6 one included) is
/// counted alone (/32); an IPv6 address by its /64, the prefix one client usually holds whole, so
/// rotating through the addresses of its own /64 does not give it fresh counts.
fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("login-addr:{v4}"),
        IpAddr::V6(v6) => {
            let network = std::net::Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64));
            format!("login-addr:{network}/64")
        }
    }
}

fn window(config: &LockoutConfig) -> Duration {
    Duration::from_secs(config.window_secs.max(1))
}

fn lock_ttl(config: &LockoutConfig) -> Duration {
    Duration::from_secs(config.lockout_secs.max(1))
}

/// Counts this attempt for `username` and `ip` and says whether it may proceed. Called after the IP
/// allowlists and before the password.
pub async fn before_password(
    store: &dyn SessionStore,
    config: &LockoutConfig,
    username: &str,
    ip: IpAddr,
) -> Result<Gate, Error> {
    if !config.enabled {
        return Ok(Gate::Proceed {
            delay: Duration::ZERO,
        });
    }
    let (user, address) = (user_key(username), address_key(ip));
    if store.get_temp(LOCK_NAMESPACE, &user).await?.is_some() {
        return Ok(Gate::Locked {
            reason: format!("user {username:?} is locked out"),
        });
    }
    if store.get_temp(LOCK_NAMESPACE, &address).await?.is_some() {
        return Ok(Gate::Locked {
            reason: format!("address {ip} is locked out"),
        });
    }
    let user_count = store.incr_counter(&user, window(config)).await?;
    let address_count = store.incr_counter(&address, window(config)).await?;
    if user_count > config.lockout_after {
        store
            .put_temp(LOCK_NAMESPACE, &user, "1", lock_ttl(config))
            .await?;
        return Ok(Gate::Locked {
            reason: format!(
                "user {username:?}: attempt {user_count} in the window, the limit is {}",
                config.lockout_after
            ),
        });
    }
    if address_count > config.address_lockout_after {
        store
            .put_temp(LOCK_NAMESPACE, &address, "1", lock_ttl(config))
            .await?;
        return Ok(Gate::Locked {
            reason: format!(
                "address {ip}: attempt {address_count} in the window, the limit is {}",
                config.address_lockout_after
            ),
        });
    }
    let over = user_count.saturating_sub(config.slowdown_after).min(10);
    Ok(Gate::Proceed {
        delay: Duration::from_millis(config.slowdown_ms.saturating_mul(over)),
    })
}

/// A successful sign-in: the user's count starts again.
pub async fn succeeded(store: &dyn SessionStore, username: &str) -> Result<(), Error> {
    store.reset_counter(&user_key(username)).await
}

/// Lifts a user's lock and clears the count (administrator action).
pub async fn unlock_user(store: &dyn SessionStore, username: &str) -> Result<(), Error> {
    let key = user_key(username);
    store.delete_temp(LOCK_NAMESPACE, &key).await?;
    store.reset_counter(&key).await
}

/// Lifts an address's lock and clears its count (administrator action). For IPv6 that is the lock
/// and count of the address's whole /64, which is what was counted.
pub async fn unlock_address(store: &dyn SessionStore, ip: IpAddr) -> Result<(), Error> {
    let key = address_key(ip);
    store.delete_temp(LOCK_NAMESPACE, &key).await?;
    store.reset_counter(&key).await
}

/// Whether the user is locked right now (a lock marker is set).
pub async fn user_locked(store: &dyn SessionStore, username: &str) -> Result<bool, Error> {
    Ok(store
        .get_temp(LOCK_NAMESPACE, &user_key(username))
        .await?
        .is_some())
}

/// Whether the address is locked right now (a lock marker is set).
pub async fn address_locked(store: &dyn SessionStore, ip: IpAddr) -> Result<bool, Error> {
    Ok(store
        .get_temp(LOCK_NAMESPACE, &address_key(ip))
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::session::memory::MemoryStore;

    #[test]
    fn addresses_are_counted_by_ipv4_or_ipv6_slash_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "login-addr:203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "login-addr:203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "login-addr:2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[tokio::test]
    async fn an_ipv6_slash_64_is_locked_and_unlocked_together() {
        let store = MemoryStore::new();
        let config = LockoutConfig {
            address_lockout_after: 3,
            lockout_after: 1000,
            slowdown_after: 1000,
            ..LockoutConfig::default()
        };
        // Each attempt from another address of the same /64, each for another username.
        for n in 1..=3u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, n, 0, 0, n));
            let gate = before_password(&store, &config, &format!("user{n}"), ip)
                .await
                .unwrap();
            assert!(matches!(gate, Gate::Proceed { .. }), "{gate:?}");
        }
        let fourth: IpAddr = "2001:db8:0:7:dead:beef::4".parse().unwrap();
        let gate = before_password(&store, &config, "user4", fourth)
            .await
            .unwrap();
        assert!(matches!(gate, Gate::Locked { .. }), "{gate:?}");
        let sibling: IpAddr = "2001:db8:0:7::1".parse().unwrap();
        assert!(address_locked(&store, sibling).await.unwrap());
        // Another /64 is not affected.
        let other: IpAddr = "2001:db8:0:8::1".parse().unwrap();
        assert!(!address_locked(&store, other).await.unwrap());
        // Unlocking one address of the /64 unlocks the /64 and clears its count.
        unlock_address(&store, sibling).await.unwrap();
        assert!(!address_locked(&store, fourth).await.unwrap());
        let gate = before_password(&store, &config, "user5", fourth)
            .await
            .unwrap();
        assert!(matches!(gate, Gate::Proceed { .. }), "{gate:?}");
    }
}
