//! The forge outbox: commit statuses not yet delivered, kept in `forge/outbox.toml` beside the
//! state so a status the forge did not take is sent on the next tick, in order.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::disk::{SCHEMA, state_dir, write_atomic};

/// Statuses waiting for their forge, oldest first, and when each forge may be asked again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    pub schema: u32,
    /// Forge name → unix second before which it is not asked (a rate limit or `Retry-After`).
    #[serde(default)]
    pub deferred: std::collections::BTreeMap<String, i64>,
    #[serde(default, rename = "status")]
    pub statuses: Vec<OutboxStatus>,
}

/// One commit status as pipe decided it; the forge's own words are chosen when it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxStatus {
    pub forge: String,
    pub repo: String,
    pub commit: String,
    pub context: String,
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// Failed deliveries so far.
    #[serde(default)]
    pub attempts: u32,
}

/// `forge/outbox.toml` beside the state.
pub fn outbox_path(state: &Path) -> PathBuf {
    state_dir(state).join("forge").join("outbox.toml")
}

/// Reads the outbox; a missing file is an empty one, a corrupt one a `StateError`.
pub fn load_outbox(path: &Path) -> anyhow::Result<Outbox> {
    Ok(super::history::read_versioned(path)?.unwrap_or(Outbox { schema: SCHEMA, ..Outbox::default() }))
}

/// Writes the outbox atomically; an empty outbox removes the file.
pub fn save_outbox(path: &Path, outbox: &Outbox) -> anyhow::Result<()> {
    if outbox.statuses.is_empty() && outbox.deferred.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(super::disk::state_error(path, format!("cannot be removed: {e}")))
            }
            _ => Ok(()),
        };
    }
    let text =
        toml::to_string(outbox).map_err(|e| super::disk::state_error(path, format!("cannot be rendered: {e}")))?;
    write_atomic(path, &text)
}

impl super::history::Versioned for Outbox {
    fn schema(&self) -> u32 {
        self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_round_trips_and_empties_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = outbox_path(&dir.path().join("state.toml"));
        assert_eq!(load_outbox(&path).unwrap().statuses, Vec::new());
        let mut outbox = Outbox { schema: SCHEMA, ..Outbox::default() };
        outbox.statuses.push(OutboxStatus {
            forge: "gh".into(),
            repo: "o/r".into(),
            commit: "abc".into(),
            context: "pipe/build".into(),
            state: "pending".into(),
            description: "building \"x\"\n".into(),
            target_url: None,
            attempts: 1,
        });
        outbox.deferred.insert("gh".into(), 1_000);
        save_outbox(&path, &outbox).unwrap();
        assert_eq!(load_outbox(&path).unwrap(), outbox);
        save_outbox(&path, &Outbox { schema: SCHEMA, ..Outbox::default() }).unwrap();
        assert!(!path.exists());
    }
}
