//! IP allowlist lookup speed and memory: 100,000 random ranges (half IPv4, half IPv6; CIDR blocks,
//! single addresses and from-to ranges), compiled into an `IpRangeSet`, then millions of lookups of
//! addresses known to be inside (hits) and outside (misses).
//!
//! Run with `cargo bench --bench ip_allowlist`. Prints the build time, the memory the set takes, and
//! nanoseconds per lookup; also the cost of a whole `PolicySet::decide` (with its trace) against a rule
//! holding the 100,000 ranges, for scale.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tessera::policy::{
    AccessRequest, IpRange, IpRangeSet, IpRule, PolicyData, PolicySet, RuleScope, Subject,
};

/// Number of ranges in the set.
const RANGES: usize = 100_000;
/// Distinct probe addresses per kind; each is looked up `ROUNDS` times.
const PROBES: usize = 1_000_000;
/// Passes over the probes: `PROBES * ROUNDS` lookups per figure.
const ROUNDS: usize = 10;

/// One generated range with its inclusive numeric bounds, to draw hits from.
enum Generated {
    /// IPv4 bounds.
    V4(u32, u32),
    /// IPv6 bounds.
    V6(u128, u128),
}

/// A random IPv4 range: a /20../32 block, a single address, or a span of up to 4096 addresses. Small
/// enough that 50,000 of them leave most of the IPv4 space uncovered, so misses exist.
fn v4_range(rng: &mut StdRng) -> Result<(IpRange, Generated), Box<dyn std::error::Error>> {
    let base: u32 = rng.gen();
    Ok(match rng.gen_range(0..3) {
        0 => {
            let prefix = rng.gen_range(20..=31);
            let net = Ipv4Net::new(Ipv4Addr::from(base), prefix)?.trunc();
            let (s, e) = (u32::from(net.network()), u32::from(net.broadcast()));
            (IpRange::from(net), Generated::V4(s, e))
        }
        1 => (
            IpRange::from(IpAddr::V4(Ipv4Addr::from(base))),
            Generated::V4(base, base),
        ),
        _ => {
            let end = base.saturating_add(rng.gen_range(1..4096));
            (
                IpRange::Span {
                    from: IpAddr::V4(Ipv4Addr::from(base)),
                    to: IpAddr::V4(Ipv4Addr::from(end)),
                },
                Generated::V4(base, end),
            )
        }
    })
}

/// A random IPv6 range inside 2000::/3: a /32../128 block or a span.
fn v6_range(rng: &mut StdRng) -> Result<(IpRange, Generated), Box<dyn std::error::Error>> {
    let base: u128 = (rng.gen::<u128>() >> 3) | (1u128 << 125);
    Ok(if rng.gen_bool(0.8) {
        let prefix = rng.gen_range(32..=128);
        let net = Ipv6Net::new(Ipv6Addr::from(base), prefix)?.trunc();
        let (s, e) = (u128::from(net.network()), u128::from(net.broadcast()));
        (IpRange::from(net), Generated::V6(s, e))
    } else {
        let end = base.saturating_add(rng.gen_range(1..1u128 << 40));
        (
            IpRange::Span {
                from: IpAddr::V6(Ipv6Addr::from(base)),
                to: IpAddr::V6(Ipv6Addr::from(end)),
            },
            Generated::V6(base, end),
        )
    })
}

/// Nanoseconds per lookup over `ROUNDS` passes; the hit count keeps the work observable.
fn time_lookups(set: &IpRangeSet, probes: &[IpAddr]) -> (f64, usize) {
    let start = Instant::now();
    let mut hits = 0usize;
    for _ in 0..ROUNDS {
        for &ip in probes {
            hits += usize::from(set.contains(black_box(ip)));
        }
    }
    let elapsed = start.elapsed();
    let lookups = probes.len() * ROUNDS;
    (ns(elapsed) / lookups as f64, black_box(hits))
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(0x7e55e7a);
    let mut ranges = Vec::with_capacity(RANGES);
    let mut generated = Vec::with_capacity(RANGES);
    for i in 0..RANGES {
        let (range, bounds) = if i % 2 == 0 {
            v4_range(&mut rng)?
        } else {
            v6_range(&mut rng)?
        };
        ranges.push(range);
        generated.push(bounds);
    }

    let start = Instant::now();
    let set = IpRangeSet::from_ranges(&ranges);
    let build = start.elapsed();

    let pick_hit = |rng: &mut StdRng, v4: bool| -> IpAddr {
        loop {
            match &generated[rng.gen_range(0..generated.len())] {
                Generated::V4(s, e) if v4 => {
                    return IpAddr::V4(Ipv4Addr::from(rng.gen_range(*s..=*e)))
                }
                Generated::V6(s, e) if !v4 => {
                    return IpAddr::V6(Ipv6Addr::from(rng.gen_range(*s..=*e)))
                }
                _ => {}
            }
        }
    };
    let pick_miss = |rng: &mut StdRng, v4: bool| -> IpAddr {
        loop {
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>()))
            } else {
                IpAddr::V6(Ipv6Addr::from((rng.gen::<u128>() >> 3) | (1u128 << 125)))
            };
            if !set.contains(ip) {
                return ip;
            }
        }
    };
    let probes = |rng: &mut StdRng, f: &dyn Fn(&mut StdRng, bool) -> IpAddr| -> Vec<IpAddr> {
        (0..PROBES).map(|i| f(rng, i % 2 == 0)).collect()
    };
    let hits = probes(&mut rng, &pick_hit);
    let misses = probes(&mut rng, &pick_miss);
    let v4_hits: Vec<IpAddr> = (0..PROBES).map(|_| pick_hit(&mut rng, true)).collect();
    let v6_hits: Vec<IpAddr> = (0..PROBES).map(|_| pick_hit(&mut rng, false)).collect();
    let mapped_hits: Vec<IpAddr> = v4_hits
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
            other => *other,
        })
        .collect();

    let (hit_ns, hit_count) = time_lookups(&set, &hits);
    let (miss_ns, miss_count) = time_lookups(&set, &misses);
    let (v4_ns, _) = time_lookups(&set, &v4_hits);
    let (v6_ns, _) = time_lookups(&set, &v6_hits);
    let (mapped_ns, _) = time_lookups(&set, &mapped_hits);
    assert_eq!(hit_count, PROBES * ROUNDS, "every hit probe is inside");
    assert_eq!(miss_count, 0, "every miss probe is outside");

    // A whole decision against a rule with all 100,000 ranges (trace strings included).
    let policy_set = PolicySet::build(
        PolicyData {
            ip_rules: vec![IpRule {
                name: "big".into(),
                ranges: ranges.clone(),
                scope: RuleScope::Everyone,
            }],
            ..PolicyData::default()
        },
        1,
    )?;
    let subject = Subject {
        username: "alice".into(),
        groups: vec!["finance".into()],
        roles: vec!["admin".into()],
    };
    let decisions = 200_000;
    let start = Instant::now();
    for i in 0..decisions {
        let d = policy_set.decide(&AccessRequest {
            subject: &subject,
            ip: hits[i % hits.len()],
            sp: None,
            session: None,
            mfa_available: &[],
            now: 1_800_000_000,
        });
        black_box(d);
    }
    let decide_ns = ns(start.elapsed()) / decisions as f64;

    let lookups = PROBES * ROUNDS;
    let bytes = set.memory_bytes();
    println!(
        "ip_allowlist: {RANGES} ranges (50% IPv4, 50% IPv6) -> {} disjoint intervals",
        set.len()
    );
    println!("  build (sort + merge):     {:>8.1} ms", ns(build) / 1e6);
    println!(
        "  memory of the set:        {:>8.2} MiB ({:.1} bytes per range)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / RANGES as f64
    );
    println!("  lookup, hit (mixed):      {hit_ns:>8.1} ns   ({lookups} lookups)");
    println!("  lookup, miss (mixed):     {miss_ns:>8.1} ns   ({lookups} lookups)");
    println!("  lookup, IPv4 hit:         {v4_ns:>8.1} ns   ({lookups} lookups)");
    println!("  lookup, IPv6 hit:         {v6_ns:>8.1} ns   ({lookups} lookups)");
    println!("  lookup, IPv4-mapped hit:  {mapped_ns:>8.1} ns   ({lookups} lookups)");
    println!(
        "  PolicySet::decide (IP only, with trace): {decide_ns:.0} ns   ({decisions} decisions)"
    );
    Ok(())
}
