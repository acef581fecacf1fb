//! Where an untrusted preview writes: nothing of the host's disk. Its root filesystem is
//! read-only and each place it writes is a tmpfs, whose pages are charged to the memory of the
//! container writing them, of at most half its memory limit.

use serde_json::{Map, Value, json};

use crate::docker::Confinement;

/// Where an app writes besides its volumes: the paths Docker's advice for `--read-only`
/// keeps writable, and `/var/tmp`. On an untrusted preview's read-only root each is a tmpfs.
pub(crate) const WRITABLE_PATHS: &[&str] = &["/tmp", "/run", "/var/tmp"];

/// The most each tmpfs of an untrusted preview holds: half its memory limit. A tmpfs's pages
/// are charged to the memory of the container that writes them, so the limit bounds them all
/// together; at half, filling one ends in "no space left on device" while the app keeps the
/// other half, where a tmpfs as large as the limit ends in the OOM killer instead.
pub(crate) fn tmpfs_bytes(confinement: &Confinement) -> u64 {
    // `limits.memory` is checked (at least 6m) when the pipeline file is read: never 0, which
    // a tmpfs would take for "no bound".
    crate::config::parse_memory(&confinement.memory).filter(|b| *b > 0).unwrap_or(6 << 20).div_ceil(2)
}

/// `bytes` as a size a tmpfs takes and a person reads: `128m`, `1g`, `3k`, `4097`.
pub(crate) fn size_text(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 30) == 0 => format!("{}g", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}m", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => b.to_string(),
    }
}

/// Where an untrusted preview's service writes, bounded and off the host's disk: its root
/// filesystem read-only; a tmpfs of at most `bytes` at each of `volumes` (its anonymous volumes
/// and its image's `VOLUME`s, each `PATH` or `PATH:ro`) and at each of [`WRITABLE_PATHS`]; and
/// a size on each `tmpfs` the service had without one. A path where the service mounts
/// something already (a named volume, a tmpfs) keeps it. A tmpfs standing for a volume is
/// given to the service's user when that is a number (`user`, else `image_user`, the image's):
/// Docker gives a new volume its directory's owner, while a tmpfs is root's. Every tmpfs but
/// the service's own allows running programs, as the volume or writable layer it replaces did.
pub(crate) fn bound_writes(service: &mut Map<String, Value>, volumes: &[String], image_user: &str, bytes: u64) {
    let size = format!("size={}", size_text(bytes));
    let mut entries: Vec<String> = match service.remove("tmpfs") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    for entry in &mut entries {
        let sized = entry.split_once(':').is_some_and(|(_, o)| o.split(',').any(|o| o.starts_with("size=")));
        if !sized {
            entry.push(if entry.contains(':') { ',' } else { ':' });
            entry.push_str(&size);
        }
    }
    let mut taken: Vec<String> = entries.iter().map(|e| clean_path(e.split(':').next().unwrap_or(e))).collect();
    for volume in service.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        let target = match volume {
            Value::String(s) => s.split(':').nth(1),
            Value::Object(o) => o.get("target").and_then(Value::as_str),
            _ => None,
        };
        taken.extend(target.map(clean_path));
    }
    let user = match service.get("user") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => image_user.to_string(),
    };
    let owner = owner_options(&user);
    let wanted = volumes
        .iter()
        .map(|v| {
            let (path, mode) = v.split_once(':').unwrap_or((v, ""));
            let ro = if mode.split(',').any(|m| m == "ro") { ",ro" } else { "" };
            (clean_path(path), format!("{size},exec{owner}{ro}"))
        })
        .chain(WRITABLE_PATHS.iter().map(|p| (p.to_string(), format!("{size},exec"))));
    for (path, options) in wanted {
        if path == "/" || !path.starts_with('/') || taken.contains(&path) {
            continue;
        }
        entries.push(format!("{path}:{options}"));
        taken.push(path);
    }
    service.insert("tmpfs".into(), json!(entries));
    service.insert("read_only".into(), json!(true));
}

/// `/data/` and `/data` are one mount point.
fn clean_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".into() } else { trimmed.into() }
}

/// `,uid=N` and `,gid=M` of a tmpfs for `user` (`UID`, `UID:GID`, names ignored, root left as is).
fn owner_options(user: &str) -> String {
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    let mut out = String::new();
    for (key, id) in [("uid", uid), ("gid", gid)] {
        if let Ok(n) = id.trim().parse::<u32>()
            && n != 0
        {
            out.push_str(&format!(",{key}={n}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tmpfs_holds_half_the_memory_limit() {
        let of = |memory: &str| tmpfs_bytes(&Confinement { memory: memory.into(), ..Confinement::default() });
        assert_eq!((of("256m"), of("2g"), of("6m")), (128 << 20, 1 << 30, 3 << 20));
        assert_eq!(size_text(of("256m")), "128m");
        assert_eq!(size_text(of("2g")), "1g");
        assert_eq!(size_text(of("6k")), "3k");
        assert_eq!(size_text(of("4097")), "2049");
        assert!(of("nonsense") > 0, "0 would be a tmpfs without bound");
    }

    #[test]
    fn writes_go_to_tmpfs_of_a_bounded_size_on_a_read_only_root() {
        let mut service = json!({
            "image": "x",
            "tmpfs": ["/cache", "/sized:size=1m", "/opts:rw,noexec"],
            "volumes": ["data:/tmp:rw", {"type": "volume", "source": "more", "target": "/more/"}],
            "read_only": false,
        })
        .as_object()
        .cloned()
        .unwrap();
        let volumes = ["/anon".to_string(), "/ro:ro".into(), "/more".into(), "/cache/".into(), "/".into()];
        bound_writes(&mut service, &volumes, "1000:50", 64 << 20);
        assert_eq!(service["read_only"], true);
        assert_eq!(
            service["tmpfs"],
            json!([
                "/cache:size=64m",
                "/sized:size=1m",
                "/opts:rw,noexec,size=64m",
                "/anon:size=64m,exec,uid=1000,gid=50",
                "/ro:size=64m,exec,uid=1000,gid=50,ro",
                "/run:size=64m,exec",
                "/var/tmp:size=64m,exec",
            ]),
            "a path mounted already (`/tmp`, `/more`, `/cache`) keeps its mount"
        );
        // The service's own user wins over the image's; a name or root gives the tmpfs to root.
        for (user, want) in [
            (json!("33"), "/a:size=64m,exec,uid=33"),
            (json!(0), "/a:size=64m,exec"),
            (json!("www"), "/a:size=64m,exec"),
        ] {
            let mut service = json!({ "user": user }).as_object().cloned().unwrap();
            bound_writes(&mut service, &["/a".into()], "1000", 64 << 20);
            assert_eq!(service["tmpfs"][0], want);
        }
    }
}
