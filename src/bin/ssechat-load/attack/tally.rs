//! What one kind of attacker saw, counted from many tasks at once: connections opened,
//! refused, closed by the server, failed, and every answer by its status.

use std::sync::atomic::{AtomicU64, Ordering};

use super::sources::Sources;

/// Statuses are counted in one slot each, 0 to 599.
const STATUSES: usize = 600;

pub struct Tally {
    /// What the report calls this kind, e.g. `idle sockets`.
    pub name: &'static str,
    pub attackers: usize,
    pub sources: Sources,
    opened: AtomicU64,
    /// Connects that failed or timed out.
    failed: AtomicU64,
    /// Closed by the server after a first answer of 429 or 503: over a cap at accept.
    refused: AtomicU64,
    /// Closed by the server otherwise: a timeout, an error, a close after answering.
    closed: AtomicU64,
    statuses: Vec<AtomicU64>,
}

impl Tally {
    pub fn new(name: &'static str, attackers: usize, sources: Sources) -> Self {
        let statuses = (0..STATUSES).map(|_| AtomicU64::new(0)).collect();
        let zero = || AtomicU64::new(0);
        Self {
            name,
            attackers,
            sources,
            opened: zero(),
            failed: zero(),
            refused: zero(),
            closed: zero(),
            statuses,
        }
    }

    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn answer(&self, status: u16) {
        self.statuses[usize::from(status).min(STATUSES - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The server ended a connection whose first answer (if any) was `first`.
    pub fn server_closed(&self, first: Option<u16>) {
        let counter = if is_refusal(first) { &self.refused } else { &self.closed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counts, for the report.
    pub fn counts(&self) -> Counts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let statuses = (0..STATUSES)
            .filter_map(|s| Some((s as u16, load(&self.statuses[s]))).filter(|(_, n)| *n > 0))
            .collect();
        Counts {
            opened: load(&self.opened),
            failed: load(&self.failed),
            refused: load(&self.refused),
            closed: load(&self.closed),
            statuses,
        }
    }
}

/// What a cap at accept answers: `429` (per client) or `503` (in all), then it closes.
pub fn is_refusal(first: Option<u16>) -> bool {
    matches!(first, Some(429 | 503))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub opened: u64,
    pub failed: u64,
    pub refused: u64,
    pub closed: u64,
    /// Answers by status, in order, each with its count (only statuses seen).
    pub statuses: Vec<(u16, u64)>,
}

impl Counts {
    /// Requests the server answered with a 2xx.
    pub fn accepted(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| (200..300).contains(s)).map(|(_, n)| n).sum()
    }

    /// Requests (or connections) answered with a 4xx or 5xx.
    pub fn rejected(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| *s >= 400).map(|(_, n)| n).sum()
    }

    /// Connections still open when the attack ended.
    pub fn open_at_end(&self) -> u64 {
        self.opened.saturating_sub(self.refused + self.closed)
    }

    /// `204 ×12, 429 ×3400`, or `none`.
    pub fn statuses_text(&self) -> String {
        if self.statuses.is_empty() {
            return "none".to_owned();
        }
        let each: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
        each.join(", ")
    }
}

impl Tally {
    /// One line of the human summary.
    pub fn line(&self) -> String {
        let c = self.counts();
        format!(
            "{:<13} {:>5} from {}: connections {} opened, {} refused, {} closed by the server, {} failed, \
             {} open at the end; requests {} accepted, {} refused; answers {}",
            self.name,
            self.attackers,
            self.sources,
            c.opened,
            c.refused,
            c.closed,
            c.failed,
            c.open_at_end(),
            c.accepted(),
            c.rejected(),
            c.statuses_text()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let c = self.counts();
        let statuses: serde_json::Map<String, serde_json::Value> =
            c.statuses.iter().map(|(s, n)| (s.to_string(), (*n).into())).collect();
        serde_json::json!({
            "attackers": self.attackers, "sources": self.sources.to_string(),
            "opened": c.opened, "refused": c.refused, "closed": c.closed, "failed": c.failed,
            "open_at_end": c.open_at_end(), "accepted": c.accepted(), "rejected": c.rejected(),
            "statuses": statuses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tally() -> Tally {
        Tally::new("typing flood", 2, Sources::new(Ipv4Addr::new(127, 0, 0, 202), 2).unwrap())
    }

    #[test]
    fn a_connection_closed_after_a_first_429_or_503_counts_as_refused() {
        let t = tally();
        for first in [Some(429), Some(503), Some(408), Some(204), None] {
            t.opened();
            t.server_closed(first);
        }
        t.opened();
        let c = t.counts();
        assert_eq!((c.opened, c.refused, c.closed, c.open_at_end()), (6, 2, 3, 1));
    }

    #[test]
    fn answers_are_counted_by_status_and_summed_by_class() {
        let t = tally();
        for status in [204, 204, 429, 503, 408, 999] {
            t.answer(status);
        }
        let c = t.counts();
        assert_eq!(c.statuses, [(204, 2), (408, 1), (429, 1), (503, 1), (599, 1)]);
        assert_eq!((c.accepted(), c.rejected()), (2, 4));
        assert_eq!(c.statuses_text(), "204 ×2, 408 ×1, 429 ×1, 503 ×1, 599 ×1");
        let json = t.json();
        assert_eq!(json["statuses"]["204"], 2);
        assert_eq!(json["sources"], "127.0.0.202-203");
    }
}
