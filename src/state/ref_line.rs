//! One ref line of the compact layout, exactly as [`super::render`] writes it, read without the
//! TOML parser: `"refs/heads/dev" = { head = "…", since = "…", pending = true }`.
//!
//! A no-op `pipe poll` reads every ref line of the state, and the parser's tokens, events and
//! spans cost about as much CPU as listing the remotes (a tenth of a poll of 20 × 51 refs). The
//! layout pipe writes is much narrower than TOML: a bare or escape-free quoted key, `, `
//! between fields, only basic strings without escapes, booleans and the one inline table of
//! `last`. A line of exactly that shape is read here; anything else (an escape, another
//! spacing, a field twice or unknown) is `None`, and the caller hands the line to the parser,
//! so every answer and every error stays the parser's. Typed values (the timestamps, the
//! stage, the outcome) go through their serde `Deserialize`, as the parser's would.

use serde::de::value::{Error, StrDeserializer};
use serde::de::{DeserializeOwned, IntoDeserializer as _};

use super::records::{RefState, StageRecord};

/// The ref's full name and record, or `None` when the line is not of the written shape.
pub(super) fn parse(line: &str) -> Option<(String, RefState)> {
    let (key, rest) = key(line)?;
    let fields = rest.strip_prefix(" = ")?;
    let (fields, rest) = table(fields)?;
    if !rest.is_empty() {
        return None;
    }
    let (mut head, mut since, mut pending, mut last, mut closed) = (None, None, None, None, None);
    for (name, value) in fields {
        let slot_taken = match (name, value) {
            ("head", Value::Str(s)) => head.replace(s.to_string()).is_some(),
            ("since", Value::Str(s)) => since.replace(typed(s)?).is_some(),
            ("pending", Value::Bool(b)) => pending.replace(b).is_some(),
            ("closed", Value::Bool(b)) => closed.replace(b).is_some(),
            ("last", Value::Table(inner)) => last.replace(stage_record(&inner)?).is_some(),
            _ => return None,
        };
        if slot_taken {
            return None;
        }
    }
    let record = RefState {
        head: head?,
        since: since?,
        pending: pending.unwrap_or(false),
        last,
        closed: closed.unwrap_or(false),
    };
    Some((key.to_string(), record))
}

fn stage_record(fields: &[(&str, Value<'_>)]) -> Option<StageRecord> {
    let (mut stage, mut result, mut commit, mut at) = (None, None, None, None);
    for (name, value) in fields {
        let Value::Str(s) = value else { return None };
        let slot_taken = match *name {
            "stage" => stage.replace(typed(s)?).is_some(),
            "result" => result.replace(typed(s)?).is_some(),
            "commit" => commit.replace(s.to_string()).is_some(),
            "at" => at.replace(typed(s)?).is_some(),
            _ => return None,
        };
        if slot_taken {
            return None;
        }
    }
    Some(StageRecord { stage: stage?, result: result?, commit: commit?, at: at? })
}

/// A string value as its type's serde `Deserialize` reads it.
fn typed<T: DeserializeOwned>(s: &str) -> Option<T> {
    let deserializer: StrDeserializer<'_, Error> = s.into_deserializer();
    T::deserialize(deserializer).ok()
}

enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    Table(Vec<(&'a str, Value<'a>)>),
}

/// The line's key (bare, or quoted without escapes) and what follows it.
fn key(line: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = line.strip_prefix('"') {
        return string_body(quoted);
    }
    let end = line.bytes().position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))?;
    (end > 0).then(|| line.split_at(end))
}

/// `{ name = value, … }` (at least one field, the spacing [`super::render`] writes) and what
/// follows it.
fn table(text: &str) -> Option<(Vec<(&str, Value<'_>)>, &str)> {
    let mut rest = text.strip_prefix("{ ")?;
    let mut fields = Vec::with_capacity(5);
    loop {
        let end = rest.bytes().position(|b| !b.is_ascii_lowercase())?;
        let (name, after_name) = rest.split_at(end);
        if name.is_empty() {
            return None;
        }
        let (value, after) = value(after_name.strip_prefix(" = ")?)?;
        fields.push((name, value));
        if let Some(after) = after.strip_prefix(", ") {
            rest = after;
        } else {
            return Some((fields, after.strip_prefix(" }")?));
        }
    }
}

fn value(text: &str) -> Option<(Value<'_>, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let (s, rest) = string_body(quoted)?;
        return Some((Value::Str(s), rest));
    }
    if let Some(rest) = text.strip_prefix("true") {
        return Some((Value::Bool(true), rest));
    }
    if let Some(rest) = text.strip_prefix("false") {
        return Some((Value::Bool(false), rest));
    }
    if text.starts_with("{ ") {
        let (fields, rest) = table(text)?;
        // One level: `last` holds strings only.
        if fields.iter().any(|(_, v)| matches!(v, Value::Table(_))) {
            return None;
        }
        return Some((Value::Table(fields), rest));
    }
    None
}

/// The body of a basic string whose opening quote was consumed, up to its closing quote, and
/// what follows; `None` for a string with an escape or a control character (the parser
/// decodes those).
fn string_body(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let end = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b.is_ascii_control())?;
    if bytes[end] != b'"' {
        return None;
    }
    // The closing quote is ASCII, so `end` is a character boundary.
    let body = &text[..end];
    if !body.is_ascii() && body.chars().any(char::is_control) {
        return None;
    }
    Some((body, &text[end + 1..]))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::super::{State, render};
    use super::*;
    use crate::model::{Outcome, Stage};

    fn record() -> RefState {
        RefState {
            head: "a".repeat(40),
            since: "2026-12-07T16:10:08.159Z".parse().unwrap(),
            pending: true,
            last: Some(StageRecord {
                stage: Stage::Deploy,
                result: Outcome::TimedOut,
                commit: "b".repeat(40),
                at: Timestamp::from_second(1_790_000_100).unwrap(),
            }),
            closed: true,
        }
    }

    /// The lines `render` writes for `record` under `name`.
    fn rendered(name: &str, record: &RefState) -> String {
        let mut state = State::default();
        state.project.entry("p".into()).or_default().refs.insert(name.into(), record.clone());
        let text = render(&state);
        text.lines().find(|l| l.contains(" = { head = ")).unwrap().to_string()
    }

    #[test]
    fn reads_the_lines_pipe_writes() {
        let full = record();
        let plain = RefState { pending: false, last: None, closed: false, ..record() };
        for (name, record) in [("refs/heads/dev", &full), ("refs/pull/7/head", &plain), ("main", &plain)] {
            let line = rendered(name, record);
            assert_eq!(parse(&line), Some((name.to_string(), record.clone())), "{line}");
        }
    }

    #[test]
    fn hands_other_shapes_to_the_parser() {
        let line = rendered("refs/heads/dev", &record());
        let others = [
            // Escapes and control characters are the parser's to decode.
            rendered("refs/heads/a\"b", &record()),
            rendered("refs/heads/a\tb", &record()),
            line.replace(", pending = true", ", pending = true, pending = true"),
            line.replace("pending", "waiting"),
            line.replace(" = { ", " = {"),
            line.replace("\"refs/heads/dev\"", "'refs/heads/dev'"),
            line.replace(" }", " } # note"),
            line.replace("stage = \"deploy\"", "stage = \"nap\""),
            line.replace("since = \"2026-12-07T16:10:08.159Z\"", "since = 2026-12-07T16:10:08.159Z"),
            line.replace(", commit = \"", ", last = { a = \"b\" }, commit = \""),
            "\"refs/heads/x\" = { since = \"2026-01-01T00:00:00Z\" }".to_string(),
            "= { head = \"h\", since = \"2026-01-01T00:00:00Z\" }".to_string(),
        ];
        for other in others {
            assert_eq!(parse(&other), None, "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_every_line_pipe_writes_for_a_plain_name_is_read_here(
            name in "refs/heads/[a-zA-Z0-9/._-]{1,40}",
            head in "[0-9a-f]{40}",
            since in 0i64..4_000_000_000_000,
            flags in proptest::prelude::any::<(bool, bool, bool)>(),
        ) {
            let (pending, with_last, closed) = flags;
            let record = RefState {
                head,
                since: Timestamp::from_millisecond(since).unwrap(),
                pending,
                last: with_last.then(|| record().last.unwrap()),
                closed,
            };
            let line = rendered(&name, &record);
            proptest::prop_assert_eq!(parse(&line), Some((name, record)), "{}", line);
        }

        #[test]
        fn prop_what_is_read_here_is_what_the_parser_reads(
            edits in proptest::collection::vec((0usize..400, 0usize..3, "[\"\\\\ ,={}ta0-]"), 1..4),
        ) {
            // A written line with a few bytes inserted, replaced or removed: whenever this
            // reader accepts it, the parser must read the same ref from it.
            let mut line = rendered("refs/heads/dev", &record());
            for (at, kind, text) in edits {
                let at = (0..=at.min(line.len())).rev().find(|i| line.is_char_boundary(*i)).unwrap_or(0);
                match kind {
                    0 => line.insert_str(at, &text),
                    1 if at < line.len() => line.replace_range(at..at + 1, &text),
                    _ if at < line.len() => { line.remove(at); }
                    _ => {}
                }
            }
            if let Some((name, record)) = parse(&line) {
                let parsed: std::collections::BTreeMap<String, RefState> = toml::from_str(&line)
                    .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{line}")))?;
                proptest::prop_assert_eq!(parsed, [(name, record)].into_iter().collect(), "{}", line);
            }
        }
    }
}
