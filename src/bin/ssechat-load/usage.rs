//! The server's CPU time and memory, read from `/proc` for the pids given.

pub struct ServerUsage {
    pids: Vec<u32>,
}

/// `/proc/<pid>/stat` counts CPU time in USER_HZ, which Linux fixes at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

impl ServerUsage {
    pub fn new(pids: &[u32]) -> Self {
        Self { pids: pids.to_vec() }
    }

    /// User + system CPU seconds, summed over the pids; `None` without pids.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.sum(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name, which is in parentheses and may hold spaces.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / TICKS_PER_SECOND)
        })
    }

    /// Resident memory in bytes, summed over the pids; `None` without pids.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.sum(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
    }

    fn sum<T: std::iter::Sum + Copy>(&self, read: impl Fn(u32) -> Option<T>) -> Option<T> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| read(pid)).sum()
    }
}

/// Server CPU time per delivery, in microseconds: what one delivered message costs.
pub fn cpu_us_per_delivery(cpu_seconds: Option<f64>, deliveries: u64) -> Option<f64> {
    cpu_seconds.filter(|_| deliveries > 0).map(|cpu| cpu * 1e6 / deliveries as f64)
}

/// `cpu_us_per_delivery` for the human summary.
pub fn per_delivery_text(cpu_seconds: Option<f64>, deliveries: u64) -> String {
    match cpu_us_per_delivery(cpu_seconds, deliveries) {
        Some(us) => format!("{us:.1} µs per delivery"),
        None => "- per delivery".to_owned(),
    }
}
