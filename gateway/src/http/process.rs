//! The standard `process_*` metrics of a Linux process, read from `/proc` at scrape time
//! (CPU time, memory, file descriptors, start time). Elsewhere they are left out.

use std::fs;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::metrics::gauge;

/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/self/stat` from the state on (field 3 of the line, 1-based), read past
/// the command name, which may itself contain spaces and parentheses.
fn stat_fields() -> Option<Vec<u64>> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn status_kib(status: &str, key: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn boot_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn max_fds() -> Option<i64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Encodes what `/proc` tells about this process.
pub(super) fn encode(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    // Fields after the state (field 3): utime is index 11, stime 12, starttime 19.
    if let Some(fields) = stat_fields() {
        let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        let cpu = ConstCounter::new(ticks as f64 / TICKS_PER_SECOND);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        if let (Some(boot), Some(start)) = (boot_time(), fields.get(19)) {
            let started = boot + start / TICKS_PER_SECOND as u64;
            let started = i64::try_from(started).unwrap_or(i64::MAX);
            gauge(
                encoder,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                started,
            )?;
        }
    }
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        let memory = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                "VmRSS:",
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                "VmSize:",
            ),
        ];
        for (name, help, key) in memory {
            if let Some(kib) = status_kib(&status, key) {
                gauge(encoder, name, help, kib.saturating_mul(1024))?;
            }
        }
    }
    if let Ok(fds) = fs::read_dir("/proc/self/fd") {
        let open = i64::try_from(fds.count()).unwrap_or(i64::MAX);
        gauge(
            encoder,
            "process_open_fds",
            "Number of open file descriptors",
            open,
        )?;
    }
    if let Some(max) = max_fds() {
        gauge(
            encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            max,
        )?;
    }
    Ok(())
}
