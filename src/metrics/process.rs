//! The standard process metrics (`process_*`, unprefixed, as every Prometheus client library
//! exports them) read from `/proc/self` at each scrape: resident and virtual memory, CPU time,
//! open and maximum file descriptors, start time. On systems without `/proc` they are absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub open_fds: i64,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

/// Fields of `/proc/self/stat` after the command name (which may hold spaces and parentheses):
/// state is the first, utime the 12th, stime the 13th, starttime the 20th.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn status_kib(status: &str, key: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
}

fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the current process's figures; None where `/proc` is not mounted.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let f = stat_fields(&stat);
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let cpu_seconds = (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / tick;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let start_time_seconds = match (boot, field(19)) {
        (Some(b), Some(ticks)) => Some(b + ticks / tick),
        _ => None,
    };
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        virtual_bytes: status_kib(&status, "VmSize:").unwrap_or(0) * 1024,
        open_fds,
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l)),
        start_time_seconds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = read() else { return Ok(()) };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauges: Vec<(&str, &str, ConstGauge<f64>)> = vec![
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                ConstGauge::new(s.resident_bytes as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                ConstGauge::new(s.virtual_bytes as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                ConstGauge::new(s.open_fds as f64),
            ),
        ];
        if let Some(m) = s.max_fds {
            gauges.push((
                "process_max_fds",
                "Maximum number of open file descriptors",
                ConstGauge::new(m as f64),
            ));
        }
        if let Some(t) = s.start_time_seconds {
            gauges.push((
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                ConstGauge::new(t),
            ));
        }
        for (name, help, g) in gauges {
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proc_formats() {
        let f = stat_fields("42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 12345 9 9");
        assert_eq!((f[0], f[11], f[12], f[19]), ("S", "250", "50", "12345"));
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048)
        );
        assert_eq!(
            max_open_files("Limit Soft Hard Units\nMax open files            1024                 524288               files\n"),
            Some(1024)
        );
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let s = read().expect("/proc is mounted on Linux");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(s.open_fds >= 3, "stdin, stdout, stderr at least");
        assert!(s.start_time_seconds.is_some_and(|t| t > 1_600_000_000.0));
    }
}
