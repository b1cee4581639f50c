//! What `/proc/self` tells about the process (Linux only): CPU, memory, threads, file
//! descriptors, as Prometheus's standard `process_*` families.

use super::exposition::{Exposition, Kind};

/// What `/proc/self` tells about the process (Linux only).
pub(super) struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: Option<f64>,
    threads: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl ProcessStats {
    pub(super) fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let s = parse_stat(&stat)?;
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<f64>().ok()
        });
        Some(ProcessStats {
            cpu_seconds: (s.utime + s.stime) as f64 / ticks as f64,
            resident_bytes: (s.rss_pages * page as u64) as f64,
            virtual_bytes: s.vsize as f64,
            start_time_seconds: boot.map(|b| b + s.start_ticks as f64 / ticks as f64),
            threads: s.threads as f64,
            open_fds,
            max_fds,
        })
    }

    pub(super) fn write(&self, out: &mut Exposition) {
        out.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
        );
        out.sample("process_cpu_seconds_total", &[], self.cpu_seconds);
        out.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        );
        out.sample("process_resident_memory_bytes", &[], self.resident_bytes);
        out.family(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
        );
        out.sample("process_virtual_memory_bytes", &[], self.virtual_bytes);
        out.family(
            "process_threads",
            Kind::Gauge,
            "Number of OS threads in the process.",
        );
        out.sample("process_threads", &[], self.threads);
        out.family(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
        );
        if let Some(t) = self.start_time_seconds {
            out.sample("process_start_time_seconds", &[], t);
        }
        out.family(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
        );
        if let Some(n) = self.open_fds {
            out.sample("process_open_fds", &[], n);
        }
        out.family(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
        );
        if let Some(n) = self.max_fds {
            out.sample("process_max_fds", &[], n);
        }
    }
}

/// The fields of `/proc/self/stat` the exporter uses.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (wk (node) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 \
                    104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                utime: 250,
                stime: 50,
                threads: 7,
                start_ticks: 12345,
                vsize: 104857600,
                rss_pages: 2560
            }
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn process_stats_read_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let p = ProcessStats::read().expect("/proc/self is readable");
        assert!(p.resident_bytes > 0.0 && p.threads >= 1.0);
        assert!(p.open_fds.unwrap_or(1.0) >= 1.0);
    }
}
