//! Connections that have not yet proven the token ("startups", as OpenSSH
//! calls them): how many may be at it at once, in all and from one source.
//!
//! Sans-IO: the accept loop passes the source and a random roll, and holds a
//! [`StartupGuard`] for as long as the connection is unauthenticated, so the
//! rules are unit-tested without sockets or clocks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::protocol::config::MaxStartups;

/// Where a connection comes from, as far as limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// An IPv6 peer's /64 network: a host is usually handed a whole /64, so
    /// its single addresses cost nothing to switch between.
    V6([u8; 8]),
    /// Every Unix-socket peer: the kernel says nothing of who it is, and the
    /// socket file's permissions already say who may connect.
    Local,
}

impl Source {
    pub fn of(ip: Option<IpAddr>) -> Source {
        // An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
        match ip.map(|ip| ip.to_canonical()) {
            None => Source::Local,
            Some(IpAddr::V4(v4)) => Source::V4(v4),
            Some(IpAddr::V6(v6)) => Source::V6(v6.octets()[..8].try_into().expect("eight bytes")),
        }
    }
}

impl MaxStartups {
    /// The chance, in percent, that a new connection is refused while
    /// `unauthenticated` others are.
    pub fn drop_percent(&self, unauthenticated: usize) -> u32 {
        if unauthenticated < self.start {
            0
        } else if unauthenticated >= self.full {
            100
        } else {
            let (past, span) = ((unauthenticated - self.start) as u64, (self.full - self.start) as u64);
            self.rate + ((100 - self.rate) as u64 * past / span) as u32
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.start == 0 || self.start > self.full {
            return Err(format!(
                "max_startups (start, rate, full) needs 1 <= start <= full, got ({}, {}, {})",
                self.start, self.rate, self.full
            ));
        }
        if self.rate > 100 {
            return Err(format!("max_startups: rate is a percentage from 0 to 100, got {}", self.rate));
        }
        Ok(())
    }
}

impl std::fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

/// Why a connection was refused before a byte of it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already has `per_source` connections unauthenticated.
    PerSource,
    /// `full` connections are unauthenticated.
    Full,
    /// Refused by the draw between `start` and `full`.
    Random,
}

pub struct Startups {
    limits: MaxStartups,
    per_source: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only sources with a connection in, so a flood from many addresses
    /// leaves nothing behind once it ends.
    by_source: HashMap<Source, usize>,
}

impl Startups {
    pub fn new(limits: MaxStartups, per_source: usize) -> Startups {
        Startups { limits, per_source, counts: Mutex::default() }
    }

    pub fn limits(&self) -> (MaxStartups, usize) {
        (self.limits, self.per_source)
    }

    /// Lets a new connection from `source` in, counted until the guard is
    /// dropped, or says why not. `roll` is a random number below 100.
    pub fn admit(self: &Arc<Self>, source: Source, roll: u32) -> Result<StartupGuard, Refusal> {
        let mut counts = self.counts.lock().expect("lock");
        // Unix-socket peers are one source for every local user: a cap on it
        // would be a second, smaller global cap, and the total caps them anyway.
        let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
        if source != Source::Local && from_source >= self.per_source {
            return Err(Refusal::PerSource);
        }
        match self.limits.drop_percent(counts.total) {
            100 => return Err(Refusal::Full),
            p if roll < p => return Err(Refusal::Random),
            _ => {}
        }
        counts.total += 1;
        *counts.by_source.entry(source).or_default() += 1;
        Ok(StartupGuard { startups: self.clone(), source })
    }

    /// Unauthenticated connections now: in all, and from `source`.
    #[cfg(test)]
    fn count(&self, source: Source) -> (usize, usize) {
        let counts = self.counts.lock().expect("lock");
        (counts.total, counts.by_source.get(&source).copied().unwrap_or(0))
    }
}

/// Counts its connection as unauthenticated until dropped: when the peer
/// proves the token, or the connection ends.
pub struct StartupGuard {
    startups: Arc<Startups>,
    source: Source,
}

impl Drop for StartupGuard {
    fn drop(&mut self) {
        let mut counts = self.startups.counts.lock().expect("lock");
        counts.total -= 1;
        if let Some(n) = counts.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.by_source.remove(&self.source);
            }
        }
    }
}

/// A random number below 100, from a xorshift64* state: the draw needs to be
/// unpredictable to a peer that cannot see the server, not secret, and the
/// accept loop should not make a system call per connection for it.
pub fn roll(state: &mut u64) -> u32 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % 100) as u32
}

/// A seed for [`roll`] (never zero: xorshift would stay at zero).
pub fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_ne_bytes(bytes) | 1
}

/// Refusals are logged at most once per [`Refusals::WINDOW`]: a flood of
/// connections must not become a flood of log lines. The first refusal after
/// a quiet window is logged at once; those after it, summed up at the end of
/// each window.
#[derive(Default)]
pub struct Refusals {
    /// Refused since the last line: per source cap, full, at random.
    counts: [u64; 3],
    /// When the current window started; `None`: quiet.
    since: Option<Instant>,
}

impl Refusals {
    pub const WINDOW: Duration = Duration::from_secs(5);

    /// Counts a refusal; returns the line to log now, if any.
    pub fn note(&mut self, refusal: Refusal, peer: &str, limits: (MaxStartups, usize), now: Instant) -> Option<String> {
        if self.since.is_none() {
            self.since = Some(now);
            let (max_startups, per_source) = limits;
            let why = match refusal {
                Refusal::PerSource => format!("{per_source} connections from its address are not authenticated yet"),
                Refusal::Full => format!("{} connections are not authenticated yet", max_startups.full),
                Refusal::Random => {
                    format!("refused at random, past {} unauthenticated connections", max_startups.start)
                }
            };
            return Some(format!(
                "{peer}: closed at once: {why} (max_startups {max_startups}, max_startups_per_source {per_source}); \
                 more such refusals are counted and logged every {} s",
                Self::WINDOW.as_secs()
            ));
        }
        self.counts[refusal as usize] += 1;
        None
    }

    /// When [`Refusals::flush`] is due.
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + Self::WINDOW)
    }

    /// The summary of the window that ended, if anything was refused in it; a
    /// window with none ends the flood, and the next refusal is logged at once.
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        let since = self.since?;
        let [per_source, full, random] = std::mem::take(&mut self.counts);
        if per_source + full + random == 0 {
            self.since = None;
            return None;
        }
        self.since = Some(now);
        Some(format!(
            "closed {} more unauthenticated connections at once in the last {:.1} s: {per_source} over the \
             per-source cap, {full} at max_startups' full, {random} at random",
            per_source + full + random,
            now.saturating_duration_since(since).as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(last: u8) -> Source {
        Source::of(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))))
    }

    #[test]
    fn sources_are_v4_addresses_v6_networks_and_local() {
        let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(Source::of(Some(IpAddr::V6(mapped))), v4(1));
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(Some(a.into())), Source::of(Some(b.into())));
        assert_ne!(Source::of(Some(a.into())), Source::of(Some(c.into())));
        assert_eq!(Source::of(None), Source::Local);
    }

    #[test]
    fn drop_chance_follows_openssh() {
        let m = MaxStartups { start: 10, rate: 30, full: 100 };
        assert_eq!(m.drop_percent(0), 0);
        assert_eq!(m.drop_percent(9), 0);
        assert_eq!(m.drop_percent(10), 30);
        assert_eq!(m.drop_percent(55), 65);
        assert_eq!(m.drop_percent(99), 99);
        assert_eq!(m.drop_percent(100), 100);
        assert_eq!(m.drop_percent(1000), 100);
        // start == full: a plain cap, whatever the rate.
        let hard = MaxStartups { start: 5, rate: 0, full: 5 };
        assert_eq!((hard.drop_percent(4), hard.drop_percent(5)), (0, 100));
        assert!(hard.validate().is_ok());
        assert!(MaxStartups::default().validate().is_ok());
        assert!(MaxStartups { start: 0, rate: 30, full: 5 }.validate().is_err());
        assert!(MaxStartups { start: 6, rate: 30, full: 5 }.validate().is_err());
        assert!(MaxStartups { start: 5, rate: 101, full: 9 }.validate().is_err());
    }

    #[test]
    fn per_source_cap_leaves_room_for_other_sources() {
        let s = Arc::new(Startups::new(MaxStartups { start: 100, rate: 30, full: 100 }, 3));
        let mine: Vec<_> = (0..3).map(|_| s.admit(v4(1), 99).unwrap()).collect();
        assert_eq!(s.admit(v4(1), 99).err(), Some(Refusal::PerSource));
        let other = s.admit(v4(2), 99).unwrap();
        assert_eq!(s.count(v4(1)), (4, 3));
        drop(mine);
        assert_eq!(s.count(v4(1)), (1, 0));
        assert!(s.admit(v4(1), 99).is_ok());
        drop(other);
        assert_eq!(s.count(v4(2)), (0, 0));
        assert!(s.counts.lock().unwrap().by_source.is_empty(), "sources are forgotten when their last guard goes");
    }

    #[test]
    fn unix_peers_are_not_capped_per_source() {
        let s = Arc::new(Startups::new(MaxStartups { start: 5, rate: 30, full: 5 }, 1));
        let local: Vec<_> = (0..5).map(|_| s.admit(Source::Local, 0).unwrap()).collect();
        assert_eq!(s.admit(Source::Local, 99).err(), Some(Refusal::Full));
        drop(local);
        assert!(s.admit(Source::Local, 0).is_ok());
    }

    #[test]
    fn past_start_refusals_are_drawn_and_full_refuses_all() {
        let s = Arc::new(Startups::new(MaxStartups { start: 2, rate: 50, full: 4 }, 10));
        let mut held: Vec<_> = (0..2).map(|i| s.admit(v4(i), 0).unwrap()).collect();
        // 2 in: a 50% chance. A roll under it is refused, one at it or over let in.
        assert_eq!(s.admit(v4(9), 49).err(), Some(Refusal::Random));
        held.push(s.admit(v4(9), 50).unwrap());
        // 3 in: 75%.
        assert_eq!(s.admit(v4(9), 74).err(), Some(Refusal::Random));
        held.push(s.admit(v4(9), 75).unwrap());
        assert_eq!(s.admit(v4(8), 99).err(), Some(Refusal::Full));
        held.pop();
        assert!(s.admit(v4(8), 99).is_ok());
    }

    #[test]
    fn rolls_are_spread_below_100() {
        let mut state = seed();
        let mut seen = [0u32; 100];
        for _ in 0..100_000 {
            seen[roll(&mut state) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (700..1300).contains(&n)), "{seen:?}");
    }

    #[test]
    fn refusals_are_logged_once_then_summed_up() {
        let limits = (MaxStartups::default(), 16);
        let t0 = Instant::now();
        let mut r = Refusals::default();
        assert_eq!(r.due(), None);
        let first = r.note(Refusal::PerSource, "127.0.0.1:5", limits, t0).expect("the first is logged");
        assert!(first.contains("16 connections from its address"), "{first}");
        for _ in 0..1000 {
            assert_eq!(r.note(Refusal::PerSource, "127.0.0.1:5", limits, t0), None);
        }
        assert_eq!(r.note(Refusal::Random, "127.0.0.1:6", limits, t0), None);
        assert_eq!(r.due(), Some(t0 + Refusals::WINDOW));
        let summary = r.flush(t0 + Refusals::WINDOW).expect("a summary");
        assert!(summary.contains("closed 1001 more") && summary.contains("1000 over the per-source cap"), "{summary}");
        // A quiet window ends the flood: the next refusal is logged at once.
        assert_eq!(r.flush(t0 + 2 * Refusals::WINDOW), None);
        assert_eq!(r.due(), None);
        assert!(r.note(Refusal::Full, "127.0.0.1:7", limits, t0 + 3 * Refusals::WINDOW).is_some());
    }
}
