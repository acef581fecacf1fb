//! The counters of `pipe run` between processes: `metrics.json` beside the state, read, added
//! to and written back (temp file, rename) under its own short lock, and rendered whole into
//! the textfile node_exporter reads.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Family, Kind, Series};

/// Schema of `metrics.json`; a file of another schema starts over (counters may reset:
/// Prometheus' `rate` and `increase` take a reset as a restart).
const SCHEMA: u32 = 1;

/// Every series `pipe run` keeps, by family name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Store {
    pub schema: u32,
    #[serde(default)]
    pub families: BTreeMap<String, Series>,
}

impl Store {
    fn series(&mut self, family: &Family) -> &mut Series {
        self.families.entry(family.name.to_string()).or_default()
    }

    /// Adds `by` to a counter.
    pub(crate) fn add(&mut self, family: &Family, labels: String, by: f64) {
        debug_assert_eq!(family.kind, Kind::Counter);
        *self.series(family).values.entry(labels).or_insert(0.0) += by;
    }

    /// Sets a gauge.
    pub(crate) fn set(&mut self, family: &Family, labels: String, value: f64) {
        debug_assert_eq!(family.kind, Kind::Gauge);
        self.series(family).values.insert(labels, value);
    }

    /// Adds one observation to a histogram.
    pub(crate) fn observe(&mut self, family: &Family, labels: String, value: f64) {
        debug_assert_eq!(family.kind, Kind::Histogram);
        self.series(family).histograms.entry(labels).or_default().observe(family.buckets, value);
    }

    /// The text format of `families`, in that order; series of families not listed (an older
    /// pipe's) are left out.
    pub(crate) fn render(&self, families: &[Family]) -> String {
        let mut out = String::new();
        for family in families {
            super::render(&mut out, family, self.families.get(family.name));
        }
        out
    }
}

/// `metrics.json` beside the state file.
pub(crate) fn path(state: &Path) -> PathBuf {
    crate::state::state_dir(state).join("metrics.json")
}

/// Held while a process reads, adds to and writes the store: ticks that overlap (one holding
/// the state lock, one refused by it) both count.
pub(crate) struct StoreLock(#[allow(dead_code)] File);

pub(crate) fn lock(store: &Path) -> anyhow::Result<StoreLock> {
    let mut name = store.as_os_str().to_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("failed to create directory `{}`", dir.display()))?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("failed to open metrics lock `{}`", path.display()))?;
    file.lock().with_context(|| format!("failed to lock `{}`", path.display()))?;
    Ok(StoreLock(file))
}

/// Reads the store; a missing file, or one this pipe cannot read, is an empty store (metrics
/// are not state: a reset costs a counter restart, never a build).
pub(crate) fn load(path: &Path) -> Store {
    let empty = Store { schema: SCHEMA, families: BTreeMap::new() };
    let Ok(text) = fs::read(path) else { return empty };
    match serde_json::from_slice::<Store>(&text) {
        Ok(store) if store.schema == SCHEMA => store,
        _ => empty,
    }
}

/// Writes the store.
pub(crate) fn save(path: &Path, store: &Store) -> anyhow::Result<()> {
    let text = serde_json::to_vec(store).context("failed to render metrics")?;
    replace(path, &text, 0o600)
}

/// Replaces `path` with `content` atomically: a temp file in the same directory, then a
/// rename, so a reader (node_exporter) sees the old file or the new one, never part of one.
/// No fsync: losing the last tick's metrics to a power cut costs a sample, not a build.
pub(crate) fn replace(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // node_exporter reads only `*.prom`: the temp file's name must not end so.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in `{}`", dir.display()))?;
    tmp.write_all(content).with_context(|| format!("failed to write `{}`", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of `{}`", tmp.path().display()))?;
    tmp.persist(path).with_context(|| format!("failed to rename into `{}`", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labels;

    const RUNS: Family = Family::counter("pipe_runs_total", "Runs.");

    #[test]
    fn a_store_survives_its_file_and_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(&dir.path().join("state.toml"));
        let mut store = load(&path);
        store.add(&RUNS, labels(&[("project", "a")]), 1.0);
        save(&path, &store).unwrap();
        let mut again = load(&path);
        assert_eq!(again, store);
        again.add(&RUNS, labels(&[("project", "a")]), 1.0);
        assert!(again.render(&[RUNS]).contains("pipe_runs_total{project=\"a\"} 2\n"));
    }

    #[test]
    fn an_unreadable_or_newer_store_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        fs::write(&path, "{not json").unwrap();
        assert!(load(&path).families.is_empty());
        fs::write(&path, r#"{"schema": 99, "families": {"x": {}}}"#).unwrap();
        assert!(load(&path).families.is_empty());
    }

    #[test]
    fn replace_leaves_no_temp_file_and_sets_the_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe.prom");
        replace(&path, b"a 1\n", 0o644).unwrap();
        replace(&path, b"a 2\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
