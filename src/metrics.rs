//! What `/metrics` reports, in Prometheus text format. Plain atomics: counting costs a
//! relaxed add on paths that run per message.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::domain::RoomName;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client went away (or its connection failed).
    Client = 0,
    /// The client stopped reading and was cut off after `--stall-timeout`.
    Stall = 1,
    /// The server shut down.
    Shutdown = 2,
    /// The reader lost access to the room (a rule changed, or a ban).
    Revoked = 3,
}

/// Why a stream was told `reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// History no longer holds what the client missed.
    Pruned = 0,
    /// The client's id was never given by this store (a memory store restarted).
    UnknownId = 1,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Send = 0,
    Typing = 1,
    Streams = 2,
    /// Connections refused at accept (over the per-client or the total cap).
    Connections = 3,
}

/// Upper bounds of the publish-to-flush histogram, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    messages_stored: AtomicU64,
    deliveries: AtomicU64,
    resets: [AtomicU64; 2],
    disconnects: [AtomicU64; 4],
    limited: [AtomicU64; 4],
    /// Per bucket (not cumulative), plus one past the last bound.
    flush: [AtomicU64; BUCKETS.len() + 1],
    flush_sum_us: AtomicU64,
}

impl Metrics {
    pub fn stored(&self) {
        self.messages_stored.fetch_add(1, Relaxed);
    }

    pub fn delivered(&self, messages: u64) {
        self.deliveries.fetch_add(messages, Relaxed);
    }

    pub fn reset(&self, why: Reset) {
        self.resets[why as usize].fetch_add(1, Relaxed);
    }

    pub fn disconnected(&self, why: Disconnect) {
        self.disconnects[why as usize].fetch_add(1, Relaxed);
    }

    pub fn limited(&self, which: Limited) {
        self.limited[which as usize].fetch_add(1, Relaxed);
    }

    /// From a message's publication to its write to a stream's socket.
    pub fn flushed(&self, after: Duration) {
        let secs = after.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&le| secs <= le).unwrap_or(BUCKETS.len());
        self.flush[bucket].fetch_add(1, Relaxed);
        self.flush_sum_us.fetch_add(after.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition; `streams` is the open streams per room.
    pub fn render(&self, streams: &[(RoomName, usize)]) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# HELP ssechat_open_streams Open streams per room on this node.\n# TYPE ssechat_open_streams gauge"
        );
        for (room, count) in streams {
            let _ = writeln!(text, "ssechat_open_streams{{room=\"{room}\"}} {count}");
        }
        // (name, help, [(labels, value)])
        type Counter<'a> = (&'a str, &'a str, Vec<(&'a str, u64)>);
        let counters: [Counter; 5] = [
            (
                "ssechat_messages_stored_total",
                "Messages stored through this node.",
                vec![("", self.messages_stored.load(Relaxed))],
            ),
            (
                "ssechat_deliveries_total",
                "Messages written to streams.",
                vec![("", self.deliveries.load(Relaxed))],
            ),
            (
                "ssechat_resets_total",
                "Reset events sent, by reason.",
                vec![
                    ("reason=\"pruned\"", self.resets[0].load(Relaxed)),
                    ("reason=\"unknown_id\"", self.resets[1].load(Relaxed)),
                ],
            ),
            (
                "ssechat_disconnects_total",
                "Streams ended, by reason.",
                vec![
                    ("reason=\"client\"", self.disconnects[0].load(Relaxed)),
                    ("reason=\"stall\"", self.disconnects[1].load(Relaxed)),
                    ("reason=\"shutdown\"", self.disconnects[2].load(Relaxed)),
                    ("reason=\"revoked\"", self.disconnects[3].load(Relaxed)),
                ],
            ),
            (
                "ssechat_rate_limited_total",
                "Requests refused by a limit, by limit.",
                vec![
                    ("limit=\"send\"", self.limited[0].load(Relaxed)),
                    ("limit=\"typing\"", self.limited[1].load(Relaxed)),
                    ("limit=\"streams\"", self.limited[2].load(Relaxed)),
                    ("limit=\"connections\"", self.limited[3].load(Relaxed)),
                ],
            ),
        ];
        for (name, help, samples) in counters {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let labels = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        }
        let name = "ssechat_publish_flush_seconds";
        let _ = writeln!(
            text,
            "# HELP {name} From a message's publication to its write to a stream.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.flush[i].load(Relaxed);
            let _ = writeln!(text, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.flush[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(text, "{name}_sum {}", self.flush_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(text, "{name}_count {cumulative}");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_prometheus_text() {
        let m = Metrics::default();
        m.stored();
        m.delivered(3);
        m.flushed(Duration::from_millis(3));
        m.flushed(Duration::from_secs(10));
        m.disconnected(Disconnect::Stall);
        let text = m.render(&[(RoomName::general(), 2)]);
        for line in [
            "ssechat_open_streams{room=\"general\"} 2",
            "ssechat_messages_stored_total 1",
            "ssechat_deliveries_total 3",
            "ssechat_disconnects_total{reason=\"stall\"} 1",
            "ssechat_publish_flush_seconds_bucket{le=\"0.005\"} 1",
            "ssechat_publish_flush_seconds_bucket{le=\"+Inf\"} 2",
            "ssechat_publish_flush_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
