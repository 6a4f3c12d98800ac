//! CPU and memory of processes, read from /proc (Linux).

use std::time::Instant;

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (ticks) and resident memory (KiB) of `pid`, if it exists.
pub fn sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: ") S ppid ...".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some((ticks, rss))
}

/// CPU use of a process between two samples.
#[derive(Debug, Clone)]
pub struct Meter {
    pub pid: u32,
    start: Option<(u64, u64)>,
    at: Instant,
    /// Largest RSS seen, KiB.
    pub peak_rss_kib: u64,
}

impl Meter {
    pub fn start(pid: u32) -> Self {
        let start = sample(pid);
        Self {
            pid,
            start,
            at: Instant::now(),
            peak_rss_kib: start.map_or(0, |s| s.1),
        }
    }

    /// Updates the peak RSS.
    pub fn poll(&mut self) {
        if let Some((_, rss)) = sample(self.pid) {
            self.peak_rss_kib = self.peak_rss_kib.max(rss);
        }
    }

    /// Average CPU% since start (100 = one core) and the current RSS.
    pub fn finish(&mut self) -> Option<(f64, u64)> {
        self.poll();
        let (t0, _) = self.start?;
        let (t1, rss) = sample(self.pid)?;
        let secs = self.at.elapsed().as_secs_f64().max(1e-6);
        Some((
            (t1.saturating_sub(t0)) as f64 / TICKS_PER_SECOND / secs * 100.0,
            rss,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let (ticks, rss) = sample(std::process::id()).unwrap();
        assert!(rss > 0);
        let mut m = Meter::start(std::process::id());
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let (cpu, _) = m.finish().unwrap();
        assert!(cpu >= 0.0);
        assert!(sample(std::process::id()).unwrap().0 >= ticks);
        assert!(sample(u32::MAX).is_none());
    }
}
