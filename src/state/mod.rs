//! The state file: versioned types, the lock, atomic saves. The only module that writes state.
//!
//! Layout on disk, chosen so a tick that changes nothing reads one compact file and writes none:
//!
//! ```toml
//! schema = 1
//!
//! [project.project1]
//! indexed = true
//!
//! [project.project1.refs]
//! "refs/heads/dev" = { head = "…", since = "2026-11-26T10:00:00Z", pending = true }
//! ```
//!
//! One line per ref keeps 10,000 refs near 1.5 MB. Saves go to a temp file in the same
//! directory, are fsynced, renamed over the old file, and the directory is fsynced, so a crash
//! leaves either the old or the new file. A separate `state.toml.lock` (flock) admits one
//! mutating `pipe` at a time; the kernel releases it when the process dies, however it dies.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Locked, line_column};

mod discovered;
mod disk;
mod history;
mod outbox;
mod previews;
mod records;
mod ref_line;

pub use discovered::*;
pub use disk::{SCHEMA, deploys_path, docker_config_dir, history_path, logs_dir, project_dirs, state_dir};
use disk::{inline, parent_dir, state_error, toml_key, write_atomic};
pub use history::*;
pub use outbox::*;
pub use previews::*;
pub use records::{RefState, StageRecord};

/// Everything `pipe` remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub schema: u32,
    #[serde(default)]
    pub project: BTreeMap<String, ProjectState>,
}

impl Default for State {
    fn default() -> Self {
        State { schema: SCHEMA, project: BTreeMap::new() }
    }
}

/// What is known about one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectState {
    /// A first poll succeeded; later polls treat every new pull request as work.
    #[serde(default)]
    pub indexed: bool,
    /// Tracked refs by full name (`refs/heads/dev`, `refs/pull/12/head`).
    #[serde(default)]
    pub refs: BTreeMap<String, RefState>,
}

/// Finds the state file: `--state`/`PIPE_STATE`, else systemd's `$STATE_DIRECTORY`, else
/// `/var/lib/pipe` for root, else `$XDG_STATE_HOME/pipe` (`~/.local/state/pipe`).
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd passes a colon-separated list when several directories are configured.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return Ok(PathBuf::from(first).join("state.toml"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/pipe/state.toml"));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            state_error(Path::new("state.toml"), "cannot tell where it lives: set `--state`, `PIPE_STATE` or `HOME`")
        })?;
    Ok(base.join("pipe").join("state.toml"))
}

/// Reads the state; a missing file is an empty state, anything unreadable is an error. The
/// compact layout is read a batch of lines at a time ([`read_compact`]): parsing the whole text
/// at once costs the parser's tokens and events for all of it, several times the file's size.
pub fn load(path: &Path) -> anyhow::Result<State> {
    match File::open(path) {
        Ok(file) => read_compact(path, file),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(err) => Err(state_error(path, format!("cannot be read: {err}"))),
    }
}

/// Parses state text, checking the schema version first so a newer file is refused clearly.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<State> {
    let state: State = toml::from_str(text).map_err(|err| {
        let (line, column) = err.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
        state_error(path, format!("corrupt at line {line}, column {column}: {}", err.message()))
    })?;
    if state.schema != SCHEMA {
        return Err(state_error(
            path,
            format!(
                "has schema {} but this pipe reads schema {SCHEMA}; upgrade pipe or restore a matching state",
                state.schema
            ),
        ));
    }
    Ok(state)
}

/// Reads the state from an open file a line at a time, for a reader that keeps it (the status
/// page): memory stays near the size of the result, where [`parse`] of the whole text holds the
/// text and the parser's tree too (about 50 MB at 10,000 refs). A ref line of the exact shape
/// [`render`] writes is read without the TOML parser ([`ref_line`]), the other lines of the
/// compact layout are parsed as TOML on their own; anything else (a file edited by hand into
/// another layout) is read whole by [`parse`], so the answer and any error are the same.
pub fn read_compact(path: &Path, file: File) -> anyhow::Result<State> {
    let mut reader = io::BufReader::new(file);
    if let Some(state) = compact_lines(&mut reader) {
        return Ok(state);
    }
    let mut text = String::new();
    reader
        .rewind()
        .and_then(|()| reader.read_to_string(&mut text).map(drop))
        .map_err(|err| state_error(path, format!("cannot be read: {err}")))?;
    parse(path, &text)
}

/// Ref lines of another shape parsed as one document: the parser's fixed cost is paid per batch, its memory
/// is bounded by one batch (about 40 KB of text).
const REF_BATCH: usize = 256;

/// The state from the compact layout, `None` at the first line that is not of it (or on a
/// read error: the whole parse then says what is wrong).
fn compact_lines(reader: &mut impl io::BufRead) -> Option<State> {
    enum Section {
        Top,
        Project(String),
        Refs(String),
    }
    let mut state = State { schema: 0, project: BTreeMap::new() };
    let mut section = Section::Top;
    let mut refs_sections = std::collections::BTreeSet::new();
    let (mut line, mut batch, mut batched) = (String::new(), String::new(), 0);
    // Parses the ref lines batched so far into the project's refs; a ref twice is not compact.
    let flush = |state: &mut State, section: &Section, batch: &mut String, batched: &mut usize| -> Option<()> {
        if let Section::Refs(name) = section
            && *batched > 0
        {
            let parsed: BTreeMap<String, RefState> = toml::from_str(batch).ok()?;
            let refs = &mut state.project.get_mut(name)?.refs;
            let before = refs.len();
            refs.extend(parsed);
            if refs.len() != before + *batched {
                return None;
            }
        }
        batch.clear();
        *batched = 0;
        Some(())
    };
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('[') {
            flush(&mut state, &section, &mut batch, &mut batched)?;
            // `[project.NAME]` or `[project.NAME.refs]`, each once, in that order.
            let table: toml::Table = toml::from_str(text).ok()?;
            let (key, toml::Value::Table(projects)) = table.into_iter().next()? else { return None };
            if key != "project" || projects.len() != 1 {
                return None;
            }
            let (name, toml::Value::Table(inner)) = projects.into_iter().next()? else { return None };
            let known = state.project.contains_key(&name);
            section = match inner.into_iter().next() {
                None if !known => Section::Project(name),
                Some((refs, value)) if refs == "refs" && value.as_table().is_some_and(|t| t.is_empty()) => {
                    if !known || !refs_sections.insert(name.clone()) {
                        return None;
                    }
                    Section::Refs(name)
                }
                _ => return None,
            };
            if let Section::Project(name) = &section {
                state.project.insert(name.clone(), ProjectState::default());
            }
            continue;
        }
        match &section {
            Section::Top => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Top {
                    schema: u32,
                }
                state.schema = toml::from_str::<Top>(text).ok()?.schema;
            }
            Section::Project(name) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Indexed {
                    indexed: bool,
                }
                state.project.get_mut(name)?.indexed = toml::from_str::<Indexed>(text).ok()?.indexed;
            }
            Section::Refs(name) => {
                // One ref per line: `KEY = { … }` (a line of another shape fails the batch).
                if !text.ends_with('}') {
                    return None;
                }
                // The shape pipe writes is read without the parser; a ref twice is not compact.
                if let Some((refname, record)) = ref_line::parse(text) {
                    if state.project.get_mut(name)?.refs.insert(refname, record).is_some() {
                        return None;
                    }
                    continue;
                }
                batch.push_str(text);
                batch.push('\n');
                batched += 1;
                if batched == REF_BATCH {
                    flush(&mut state, &section, &mut batch, &mut batched)?;
                }
            }
        }
    }
    flush(&mut state, &section, &mut batch, &mut batched)?;
    (state.schema == SCHEMA).then_some(state)
}

/// Renders the compact layout described in the module docs.
pub fn render(state: &State) -> String {
    let mut out = String::with_capacity(64 + state.project.values().map(|p| p.refs.len() * 160).sum::<usize>());
    out.push_str("# pipe state: rewritten atomically by pipe; edit only while no pipe process runs\n");
    out.push_str(&format!("schema = {}\n", state.schema));
    for (name, project) in &state.project {
        out.push_str(&format!("\n[project.{}]\nindexed = {}\n", toml_key(name), project.indexed));
        if project.refs.is_empty() {
            continue;
        }
        out.push_str(&format!("\n[project.{}.refs]\n", toml_key(name)));
        for (refname, record) in &project.refs {
            out.push_str(&toml_key(refname));
            out.push_str(" = ");
            out.push_str(&inline(record));
            out.push('\n');
        }
    }
    out
}

/// Writes the state atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    write_atomic(path, &render(state))
}

/// Held while a mutating command runs; dropping it (or the process dying) releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// The lock file that guards a state file: `state.toml.lock` beside it.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "state.toml".into());
    name.push(".lock");
    parent_dir(state).join(name)
}

/// Takes the lock without waiting; another holder is a [`Locked`] error naming its pid.
pub fn lock(state: &Path, command: &str) -> anyhow::Result<StateLock> {
    let path = lock_path(state);
    let dir = parent_dir(state);
    fs::create_dir_all(dir)
        .map_err(|e| state_error(state, format!("cannot create directory `{}`: {e}", dir.display())))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| state_error(state, format!("cannot open lock file `{}`: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(Locked { lock_file: path, holder: read_holder(&mut file) }.into());
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(state_error(state, format!("cannot lock `{}`: {e}", path.display())));
        }
    }
    // Who holds the lock is only a courtesy for the message above; failing to write it is harmless.
    // One write of a whole line, then the cut: a reader never sees an empty or half-written
    // holder (found by the ten-runs-at-once fault test, where losers read "pid" alone).
    let line = format!("pid {} running `pipe {command}` since {}\n", std::process::id(), crate::clock::now());
    let _ = file.rewind().and_then(|()| file.write_all(line.as_bytes()));
    let _ = file.set_len(line.len() as u64);
    remove_stale_temp_files(dir);
    Ok(StateLock { _file: file })
}

/// The holder's line from the lock file. The holder writes it right after locking, so a reader
/// that lost the race by microseconds waits briefly for a complete line.
fn read_holder(file: &mut File) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        let mut text = String::new();
        let _ = file.rewind().and_then(|()| file.read_to_string(&mut text).map(drop));
        if text.ends_with('\n') || std::time::Instant::now() > deadline {
            let text = text.trim();
            return (!text.is_empty()).then(|| text.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A save killed between creating its temp file and renaming it (SIGKILL, power loss) leaves
/// `.state.*.tmp` behind. Every writer of `state.toml` holds the lock, so once we hold it any
/// such file beside the state is stale.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".state.") && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, Stage};
    use jiff::Timestamp;

    fn sample() -> State {
        let mut state = State::default();
        let mut project = ProjectState { indexed: true, ..Default::default() };
        project.refs.insert(
            "refs/heads/feature/\"odd\" name".into(),
            RefState {
                head: "a".repeat(40),
                since: Timestamp::from_second(1_790_000_000).unwrap(),
                pending: true,
                last: Some(StageRecord {
                    stage: Stage::Build,
                    result: Outcome::Failed,
                    commit: "b".repeat(40),
                    at: Timestamp::from_second(1_790_000_100).unwrap(),
                }),
                closed: false,
            },
        );
        project.refs.insert(
            "refs/pull/7/head".into(),
            RefState {
                head: "c".repeat(40),
                since: Timestamp::from_second(1_790_000_000).unwrap(),
                pending: false,
                last: None,
                closed: true,
            },
        );
        state.project.insert("web".into(), project);
        state.project.insert("empty".into(), ProjectState::default());
        state
    }

    #[test]
    fn render_round_trips() {
        let state = sample();
        let text = render(&state);
        assert_eq!(parse(Path::new("s.toml"), &text).unwrap(), state, "{text}");
        assert_eq!(text.lines().filter(|l| l.contains(" = { head = ")).count(), 2, "one line per ref:\n{text}");
    }

    #[test]
    fn corrupt_state_names_line() {
        let err = parse(Path::new("/x/state.toml"), "schema = 1\n[project.a]\nindexed = yes\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("state file `/x/state.toml`: corrupt at line 3, column 11"), "{msg}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let err = parse(Path::new("s.toml"), "schema = 2\n").unwrap_err();
        assert!(format!("{err:#}").contains("has schema 2"), "{err:#}");
    }

    #[test]
    fn lock_file_sits_beside_state() {
        assert_eq!(lock_path(Path::new("/var/lib/pipe/state.toml")), Path::new("/var/lib/pipe/state.toml.lock"));
        assert_eq!(lock_path(Path::new("state.toml")), Path::new("./state.toml.lock"));
    }

    fn arb_state() -> impl proptest::strategy::Strategy<Value = State> {
        use proptest::prelude::*;
        let stages = [Stage::Build, Stage::Test, Stage::Push, Stage::Deploy];
        let outcomes = [Outcome::Passed, Outcome::Failed, Outcome::TimedOut, Outcome::Interrupted, Outcome::Skipped];
        let record = (0..stages.len(), 0..outcomes.len(), "[0-9a-f]{40}", 0i64..4_000_000_000).prop_map(
            move |(stage, result, commit, at)| StageRecord {
                stage: stages[stage],
                result: outcomes[result],
                commit,
                at: Timestamp::from_second(at).unwrap(),
            },
        );
        let refstate =
            ("[0-9a-f]{40}", 0i64..4_000_000_000, any::<bool>(), proptest::option::of(record), any::<bool>()).prop_map(
                |(head, since, pending, last, closed)| RefState {
                    head,
                    since: Timestamp::from_second(since).unwrap(),
                    pending,
                    last,
                    closed,
                },
            );
        let project = (any::<bool>(), proptest::collection::btree_map("\\PC{1,60}", refstate, 0..8))
            .prop_map(|(indexed, refs)| ProjectState { indexed, refs });
        proptest::collection::btree_map("[a-z0-9][a-z0-9_-]{0,20}", project, 0..4)
            .prop_map(|project| State { schema: SCHEMA, project })
    }

    #[test]
    fn the_line_reader_hands_other_layouts_and_errors_to_the_whole_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_compact(&path, File::open(&path).unwrap())
        };
        // Hand-edited into tables: not the compact layout, read whole, same state.
        let tables = "schema = 1\n[project.a.refs.\"refs/heads/x\"]\nhead = \"h\"\nsince = \"2026-01-01T00:00:00Z\"\n";
        let state = read(tables).unwrap();
        assert_eq!(state.project["a"].refs["refs/heads/x"].head, "h");
        // Twice the same ref: the whole parse's error, with its line.
        let line = "\"refs/heads/x\" = { head = \"h\", since = \"2026-01-01T00:00:00Z\" }\n";
        let twice = format!("schema = 1\n[project.a]\nindexed = true\n[project.a.refs]\n{line}{line}");
        let err = format!("{:#}", read(&twice).unwrap_err());
        assert!(err.contains("state.toml") && err.contains("line 6"), "{err}");
        let err = format!("{:#}", read("schema = 2\n").unwrap_err());
        assert!(err.contains("schema 2"), "{err}");
        assert_eq!(read(&render(&sample())).unwrap(), sample());
    }

    #[test]
    fn ref_names_with_quotes_backslashes_and_newlines_round_trip() {
        // Found by the property below: `'\` was rendered as a key the parser refused.
        let mut state = State::default();
        let project = state.project.entry("p".into()).or_default();
        let record =
            RefState { head: "a".repeat(40), since: Timestamp::UNIX_EPOCH, pending: false, last: None, closed: false };
        project.refs.insert("refs/heads/a\nb\"c\\d".into(), record.clone());
        project.refs.insert("'\\".into(), record);
        assert_eq!(parse(Path::new("s"), &render(&state)).unwrap(), state);
    }

    // Property tests (`prop_*`): `bench/run.sh` runs them with many more cases.
    proptest::proptest! {
        #[test]
        fn prop_any_state_renders_and_parses_back_unchanged(state in arb_state()) {
            let text = render(&state);
            let back = parse(Path::new("state.toml"), &text).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:#}\n{text}")))?;
            proptest::prop_assert_eq!(back, state);
        }

        #[test]
        fn prop_the_line_reader_reads_what_the_whole_parse_reads(state in arb_state()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.toml");
            save(&path, &state).unwrap();
            proptest::prop_assert!(compact_lines(&mut io::BufReader::new(File::open(&path).unwrap())).is_some());
            proptest::prop_assert_eq!(read_compact(&path, File::open(&path).unwrap()).unwrap(), state);
        }

        #[test]
        fn prop_arbitrary_text_is_parsed_or_refused_never_a_panic(text in "\\PC{0,600}") {
            if let Err(err) = parse(Path::new("state.toml"), &text) {
                let message = format!("{err:#}");
                proptest::prop_assert!(message.contains("state.toml"), "{message}");
            }
        }
    }
}
