//! When a reload has taken effect. `nginx -s reload` returns once the master got the signal;
//! the master then reads the configuration, starts new workers and tells the old ones to stop
//! accepting. On a busy host that can take longer than a short drain, and an old worker would
//! still send new requests to a release pipe is already stopping. So a switch waits until
//! every worker of the old generation is gone or says it is shutting down (its process title)
//! before the drain starts. The workers are found from the master's pid file (the `pid` of
//! `nginx -T`) and `/proc`; an nginx pipe cannot see that way (in a container) is not waited for.

use std::path::PathBuf;

/// The same wait on another host, run there by `sh -c` (over SSH) with the pid file and then
/// the reload's argv: the master's children before the reload (`/proc/PID/task/PID/children`),
/// the reload, then up to 10 s until none of them is a worker that still accepts. A host
/// without that `/proc` file is not waited for (the drain still is).
pub(crate) const REMOTE_WAIT: &str = r#"pidfile=$1; shift
m=$(cat "$pidfile" 2>/dev/null)
old=""
[ -n "$m" ] && old=$(cat "/proc/$m/task/$m/children" 2>/dev/null)
"$@" || exit $?
i=0
while [ $i -lt 500 ]; do
  busy=""
  for p in $old; do
    t=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null) || continue
    case "$t" in *"shutting down"*) ;; *"worker process"*) busy=1 ;; esac
  done
  [ -z "$busy" ] && exit 0
  sleep 0.02
  i=$((i+1))
done
echo "nginx's old workers still accept connections 10s after the reload" >&2
"#;
use std::time::{Duration, Instant};

/// nginx's workers now: the master's children, by the master's pid file.
pub(crate) fn workers(pid_file: &PathBuf) -> Option<Vec<u32>> {
    let master: u32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    std::fs::metadata(format!("/proc/{master}")).ok()?;
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid …`: the command may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(master) {
            children.push(pid);
        }
    }
    Some(children)
}

/// The `pid` file named in `nginx -T`'s output, when it is an absolute path.
pub(crate) fn pid_file(dump: &str) -> Option<PathBuf> {
    dump.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("pid "))
        .map(|p| PathBuf::from(p.trim_end_matches(';').trim()))
        .find(|p| p.is_absolute())
}

/// Waits (up to `limit`) until each of `old` is gone or shutting down; false when one is not.
pub(crate) fn wait_old_generation(old: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let accepting = old.iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|title| {
                String::from_utf8_lossy(&title).contains("worker process")
                    && !String::from_utf8_lossy(&title).contains("shutting down")
            })
        });
        if !accepting {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_is_read_from_the_dump() {
        let dump = "# configuration file /etc/nginx/nginx.conf:\nuser www-data;\npid /run/nginx.pid;\nevents {}\n";
        assert_eq!(pid_file(dump), Some(PathBuf::from("/run/nginx.pid")));
        assert_eq!(pid_file("pid logs/nginx.pid;\n"), None);
    }
}
