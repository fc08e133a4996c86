//! Which sources sent a wrong proof lately. Their proofs wait for the
//! server-wide login turn (`Shared::login_turns`), which a wrong one holds
//! for the failure delay; a proof from any other source is checked at once.
//!
//! So guessers share about two answers a second among them, and cannot make
//! a client from another address wait behind their queue. The price is one
//! check without a turn per address per [`PENALTY`]; the table is bounded,
//! and when it is full of live entries every proof waits for the turn, as if
//! every source had failed (closed, not open: then the guess rate stays
//! bounded and only the waiting comes back). Sans-IO: callers pass the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::startups::Source;

/// How long a wrong proof sends its source's proofs to the turn.
pub const PENALTY: Duration = Duration::from_secs(60);
/// Sources remembered at most (about 40 bytes each): a guesser with more
/// addresses than this, each failing within a [`PENALTY`], fills the table.
pub const MAX_REMEMBERED: usize = 4096;
/// A full table is swept of expired entries at most this often, so a flood
/// of proofs does not scan it each time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Guesses {
    failed_at: HashMap<Source, Instant>,
    swept_at: Option<Instant>,
}

impl Guesses {
    /// Whether a proof from `source` must wait for the login turn.
    pub fn must_wait(&mut self, source: Source, now: Instant) -> bool {
        self.full(now) || self.failed_at.get(&source).is_some_and(|&t| now.saturating_duration_since(t) < PENALTY)
    }

    /// Records a wrong proof from `source` (not remembered when the table is
    /// full; every source waits for the turn meanwhile anyway).
    pub fn failed(&mut self, source: Source, now: Instant) {
        if self.failed_at.contains_key(&source) || !self.full(now) {
            self.failed_at.insert(source, now);
        }
    }

    /// A right proof: its source's record goes (a guesser cannot get here
    /// without the token, so this frees nothing for one).
    pub fn succeeded(&mut self, source: Source) {
        self.failed_at.remove(&source);
    }

    fn full(&mut self, now: Instant) -> bool {
        if self.failed_at.len() < MAX_REMEMBERED {
            return false;
        }
        if self.swept_at.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY) {
            self.swept_at = Some(now);
            self.failed_at.retain(|_, &mut t| now.saturating_duration_since(t) < PENALTY);
        }
        self.failed_at.len() >= MAX_REMEMBERED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn src(n: u32) -> Source {
        Source::of(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))))
    }

    #[test]
    fn a_wrong_proof_sends_its_source_to_the_turn_for_a_while() {
        let t0 = Instant::now();
        let mut g = Guesses::default();
        assert!(!g.must_wait(src(1), t0));
        g.failed(src(1), t0);
        assert!(g.must_wait(src(1), t0 + Duration::from_secs(1)));
        assert!(!g.must_wait(src(2), t0), "another source is checked at once");
        // Failing again while waiting extends it.
        g.failed(src(1), t0 + Duration::from_secs(30));
        assert!(g.must_wait(src(1), t0 + PENALTY));
        assert!(!g.must_wait(src(1), t0 + Duration::from_secs(30) + PENALTY));
        g.failed(src(3), t0);
        g.succeeded(src(3));
        assert!(!g.must_wait(src(3), t0));
    }

    #[test]
    fn a_full_table_sends_everyone_to_the_turn_until_entries_expire() {
        let t0 = Instant::now();
        let mut g = Guesses::default();
        for n in 0..MAX_REMEMBERED as u32 {
            g.failed(src(n), t0);
        }
        let fresh = src(1 << 20);
        assert!(g.must_wait(fresh, t0), "full: nobody skips the turn");
        g.failed(fresh, t0);
        assert_eq!(g.failed_at.len(), MAX_REMEMBERED);
        // Once they expire, the sweep makes room again.
        let later = t0 + PENALTY;
        assert!(!g.must_wait(fresh, later));
        assert!(g.failed_at.is_empty());
    }
}
