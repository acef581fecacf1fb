//! Where the state's files live and how every one of them is written: the schema version,
//! the paths beside the state, atomic writes (temp file, fsync, rename, fsync of the
//! directory) and errors that name the file.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::StateError;

/// The schema this build reads and writes.
pub const SCHEMA: u32 = 1;

pub(crate) fn state_error(path: &Path, message: impl Into<String>) -> anyhow::Error {
    StateError { path: path.to_path_buf(), message: message.into() }.into()
}

pub(crate) fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        return key.to_string();
    }
    // Always a basic string: a value serializer may pick a multi-line string, which a key
    // cannot be (found by `prop_any_state_renders_and_parses_back_unchanged`).
    let mut out = String::with_capacity(key.len() + 2);
    out.push('"');
    for c in key.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn inline<T: Serialize + ?Sized>(value: &T) -> String {
    let mut buf = String::new();
    value.serialize(toml::ser::ValueSerializer::new(&mut buf)).expect("state values always serialize");
    buf
}

pub(crate) fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)
        .map_err(|e| state_error(path, format!("cannot create directory `{}`: {e}", dir.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| state_error(path, format!("cannot create a temporary file in `{}`: {e}", dir.display())))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| state_error(path, format!("cannot be saved (the previous state is intact): {e}")))?;
    tmp.persist(path)
        .map_err(|e| state_error(path, format!("cannot be replaced (the previous state is intact): {}", e.error)))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| state_error(path, format!("saved, but syncing `{}` failed: {e}", dir.display())))?;
    Ok(())
}

/// A file-system-safe, collision-safe name for a ref.
pub(crate) fn ref_key(refname: &str) -> String {
    crate::docker::branch_tag(refname)
}

pub fn state_dir(state: &Path) -> &Path {
    parent_dir(state)
}

/// The directories of a project's ref histories, run logs and deploy histories.
pub fn project_dirs(state: &Path, project: &str) -> [PathBuf; 3] {
    let dir = state_dir(state);
    ["refs", "logs", "deploys"].map(|kind| dir.join(kind).join(project))
}

/// Where a ref's history lives: `refs/PROJECT/REFKEY.toml` beside the state.
pub fn history_path(state: &Path, project: &str, refname: &str) -> PathBuf {
    state_dir(state).join("refs").join(project).join(format!("{}.toml", ref_key(refname)))
}

/// Where a ref's run logs live: `logs/PROJECT/REFKEY/` beside the state.
pub fn logs_dir(state: &Path, project: &str, refname: &str) -> PathBuf {
    state_dir(state).join("logs").join(project).join(ref_key(refname))
}

/// Where a deploy target's history lives: `deploys/PROJECT/TARGET.toml` beside the state.
pub fn deploys_path(state: &Path, project: &str, target: &str) -> PathBuf {
    state_dir(state).join("deploys").join(project).join(format!("{}.toml", ref_key(target)))
}

/// pipe's own docker client configuration (registry logins), beside the state.
pub fn docker_config_dir(state: &Path) -> PathBuf {
    state_dir(state).join("docker")
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// For `skip_serializing_if`: a flag that is off is left out of the file.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
