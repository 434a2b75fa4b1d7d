//! Where the CPU went during a scenario: user+system time of the load
//! generator, each service, Envoy and every PostgreSQL process, from /proc.

use std::collections::BTreeMap;

/// Clock ticks per second of /proc's utime/stime (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may contain spaces).
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn postgres_ticks() -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(ticks)
        .sum()
}

/// CPU ticks per process group at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot(BTreeMap<String, u64>);

/// Takes a snapshot of `processes` (name, pid), the load generator itself
/// and PostgreSQL.
pub fn snapshot(processes: &[(&str, Option<u32>)]) -> Snapshot {
    let mut map = BTreeMap::new();
    map.insert("load generator".to_owned(), ticks(std::process::id()));
    map.insert("postgres".to_owned(), postgres_ticks());
    for (name, pid) in processes {
        map.insert((*name).to_owned(), pid.map_or(0, ticks));
    }
    Snapshot(map)
}

/// Cores used by each group between `before` and `after` over `seconds`
/// (2.0 = both cores of this machine).
pub fn cores_used(before: &Snapshot, after: &Snapshot, seconds: f64) -> BTreeMap<String, f64> {
    after
        .0
        .iter()
        .map(|(name, end)| {
            let start = before.0.get(name).copied().unwrap_or(0);
            let cores = end.saturating_sub(start) as f64 / TICKS_PER_SECOND / seconds;
            (name.clone(), (cores * 100.0).round() / 100.0)
        })
        .collect()
}
