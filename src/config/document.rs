//! The span-tracking document: syntax errors, inline secrets, named tables and serde errors,
//! each reported at its `file:line:column`.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::duration;
use crate::error::{Diagnostic, line_column};

/// Keys whose value is a table. serde would also take a struct from an array of its fields in
/// order (`compose = ["file", "proj"]`), which reads as something else entirely: refused.
const TABLE_KEYS: [&str; 13] = [
    "compose", "swarm", "command", "webhook", "health", "ingress", "auth", "ecr", "timeouts", "serve", "limits",
    "page", "release",
];

/// Keys that would hold a secret inline; each has `_env` and `_file` forms instead.
const INLINE_SECRET_KEYS: [&str; 5] = ["password", "secret", "token", "webhook_url", "ssh_key_passphrase"];

/// Parsing context: the text diagnostics point into, where its keys are, and the diagnostics
/// so far.
pub(super) struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
    keys: Keys,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// The operator's pipeline file, where a password in a URL is refused; a repository's
    /// `.pipe.toml` may spell its test database's URL with one (it is the repository's, not
    /// pipe's secret).
    pub(super) pipeline: bool,
}

impl<'a> Cx<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Cx { path, text, keys: Keys::default(), diagnostics: Vec::new(), pipeline: true }
    }

    /// Parses the text, reporting every syntax error, and refuses inline secrets.
    pub(super) fn document(&mut self) -> Result<DeTable<'a>, Vec<Diagnostic>> {
        let (doc, syntax_errors) = DeTable::parse_recoverable(self.text);
        for err in syntax_errors {
            self.error(err.span(), err.message().to_string());
        }
        if !self.diagnostics.is_empty() {
            return Err(std::mem::take(&mut self.diagnostics));
        }
        let mut doc = doc.into_inner();
        reject_inline_secrets(self, &mut doc, Level::Plain);
        self.keys = Keys::index(&doc, self.text);
        Ok(doc)
    }

    pub(super) fn error(&mut self, span: Option<Range<usize>>, message: String) {
        let (line, column) = span.map(|s| line_column(self.text, s.start)).unwrap_or((1, 1));
        self.diagnostics.push(Diagnostic { path: self.path.to_path_buf(), line, column, message });
    }

    /// Reports at the key `path` names (`["registry", "r", "url"]`), or, when the file does not
    /// set it, at the nearest table that is there.
    pub(super) fn error_at(&mut self, path: &[&str], message: String) {
        let span = self.keys.locate(path);
        self.error(span, message);
    }

    /// Where [`Cx::error_at`] would report.
    pub(super) fn locate(&self, path: &[&str]) -> Option<Range<usize>> {
        self.keys.locate(path)
    }

    pub(super) fn de<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(err) => {
                let span = err.span().unwrap_or(span);
                let mut message = err.message().to_string();
                // A duration is parsed where its key is unknown; the span says which key it was.
                if message.starts_with(duration::INVALID)
                    && let Some(name) = self.keys.name_at(&span)
                {
                    message = format!("`{name}`: {message}");
                }
                self.error(Some(span), message);
                None
            }
        }
    }

    /// Splits `[section.NAME]` tables, validating each NAME.
    pub(super) fn named_tables<'i>(
        &mut self,
        value: Spanned<DeValue<'i>>,
        section: &str,
    ) -> Vec<(String, Spanned<DeValue<'i>>)> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(Some(span), format!("`{section}` must be a table of named tables, e.g. `[{section}.NAME]`"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, value) in table {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            if let Err(why) = validate_name(&name) {
                self.error(Some(name_span), format!("invalid {section} name `{name}`: {why}"));
                continue;
            }
            out.push((name, value));
        }
        out
    }
}

/// Names become file names, container names and compose project names.
pub(crate) fn validate_name(name: &str) -> Result<(), &'static str> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 63 || !valid_chars || !starts_ok {
        return Err("expected 1 to 63 lowercase letters, digits, `-` or `_`, starting with a letter or digit");
    }
    Ok(())
}

/// Tables whose values are variables: a literal or a secret by reference.
const VALUES_KEYS: [&str; 3] = ["env", "build_args", "test_env"];

/// Where a table stands, for the keys whose meaning depends on it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Plain,
    /// `env`, `build_args`, `test_env`: a table of variables.
    Values,
    /// One variable's `{ env }`, `{ file }` or `{ command = [argv] }`: its `command` is an array.
    Reference,
}

/// Removes keys that would hold a secret inline, with a diagnostic that names the fix.
fn reject_inline_secrets(cx: &mut Cx<'_>, table: &mut DeTable<'_>, level: Level) {
    let entries = std::mem::take(table);
    *table = entries
        .into_iter()
        .filter_map(|(key, mut value)| {
            let name: &str = key.get_ref().as_ref();
            if TABLE_KEYS.contains(&name)
                && !(level == Level::Reference && name == "command")
                && let DeValue::Array(items) = value.get_ref()
                && !items.iter().all(|item| matches!(item.get_ref(), DeValue::Table(_)))
            {
                cx.error(
                    Some(key.span()),
                    format!("`{name}` is a table: write `{name} = {{ key = value, … }}` or a `[….{name}]` section, not an array"),
                );
                return None;
            }
            if INLINE_SECRET_KEYS.contains(&name) {
                cx.error(
                    Some(key.span()),
                    format!(
                        "secrets are never written inline: use `{name}_env = \"VARIABLE\"` or `{name}_file = \"/path\"`"
                    ),
                );
                return None;
            }
            let span = value.span();
            let inner_level = match level {
                _ if VALUES_KEYS.contains(&name) => Level::Values,
                Level::Values => Level::Reference,
                _ => Level::Plain,
            };
            match value.get_mut() {
                DeValue::Table(inner) => reject_inline_secrets(cx, inner, inner_level),
                DeValue::Array(items) => {
                    for item in items.iter_mut() {
                        let span = item.span();
                        match item.get_mut() {
                            DeValue::Table(inner) => reject_inline_secrets(cx, inner, inner_level),
                            DeValue::String(text) => reject_url_password(cx, name, text, span),
                            _ => {}
                        }
                    }
                }
                DeValue::String(text) => reject_url_password(cx, name, text, span),
                _ => {}
            }
            Some((key, value))
        })
        .collect();
}

/// Refuses a string holding a URL with a password (`https://user:pw@host/…`), or for `url` and
/// `repo` a `user:pw@host` without a scheme: a password is written inline there as surely as
/// in `password = "…"`. A password spelled `$VARIABLE` (a shell's, expanded when it runs) is not
/// a value.
fn reject_url_password(cx: &mut Cx<'_>, key: &str, text: &str, span: Range<usize>) {
    if !cx.pipeline {
        return;
    }
    let Some(shown) = url_password(text, key == "url" || key == "repo") else { return };
    let fix = match key {
        "repo" => "drop it from the URL and give the remote's credentials by reference: `auth = { username = \"…\", token_env = \"VARIABLE\" }`".to_string(),
        "url" => "drop it from the URL: a registry takes `username` and `password_env`/`password_file`; a URL that is a secret as a whole takes `url_env`/`url_file` where the key has them".to_string(),
        _ => "give the password by reference: a secret in the target's `env` (`{ env = \"VARIABLE\" }`, `{ file = \"/path\" }`, `{ command = [\"…\"] }`) that the command expands (`$VARIABLE`), or a `*_env`/`*_file` key where there is one".to_string(),
    };
    cx.error(
        Some(span),
        format!("`{key}`: a password is never written inline, not even in a URL (`{shown}`)\nhint: {fix}"),
    );
}

/// The first URL in `text` that carries a password, shown with the password masked.
fn url_password(text: &str, schemeless: bool) -> Option<String> {
    let stop = |c: char| c.is_whitespace() || "/?#\"'<>`".contains(c);
    let mut starts: Vec<usize> = text.match_indices("://").map(|(i, _)| i + 3).collect();
    if schemeless && !text.contains("://") {
        starts.push(0);
    }
    for start in starts {
        let authority = &text[start..];
        let authority = &authority[..authority.find(stop).unwrap_or(authority.len())];
        let Some(at) = authority.rfind('@') else { continue };
        let Some((user, password)) = authority[..at].split_once(':') else { continue };
        if password.is_empty() || password.starts_with('$') {
            continue;
        }
        let scheme_start = text[..start.saturating_sub(3)]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |i| i + 1);
        let prefix = &text[scheme_start..start];
        return Some(format!("{prefix}{user}:***@{}", &authority[at + 1..]));
    }
    None
}

/// Every key of the document and where it and its value are, so that a rule checked after serde
/// consumed the document can still point at the key it is about.
#[derive(Debug, Default)]
struct Keys(Vec<Key>);

#[derive(Debug)]
struct Key {
    /// Keys from the root; an array item's position is written as its index.
    path: Vec<String>,
    /// The dotted name people read, without array positions: `project.a.deploy.timeout`.
    name: String,
    key: Range<usize>,
    value: Range<usize>,
    /// A table written as its own `[header]`, where a key it lacks is reported.
    header: bool,
}

impl Keys {
    fn index(doc: &DeTable<'_>, text: &str) -> Keys {
        let mut keys = Keys::default();
        keys.table(doc, &[], "", text);
        keys
    }

    fn table(&mut self, table: &DeTable<'_>, path: &[String], name: &str, text: &str) {
        for (key, value) in table {
            let key_name: &str = key.get_ref().as_ref();
            let name = if name.is_empty() { key_name.to_string() } else { format!("{name}.{key_name}") };
            let path = [path, &[key_name.to_string()]].concat();
            self.value(value, key.span(), path, name, text);
        }
    }

    fn value(&mut self, value: &Spanned<DeValue<'_>>, key: Range<usize>, path: Vec<String>, name: String, text: &str) {
        let span = value.span();
        let header =
            matches!(value.get_ref(), DeValue::Table(_)) && text.get(span.clone()).is_some_and(|t| t.starts_with('['));
        match value.get_ref() {
            DeValue::Table(inner) => self.table(inner, &path, &name, text),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(_) = item.get_ref() {
                        let path = [path.as_slice(), &[i.to_string()]].concat();
                        self.value(item, item.span(), path, name.clone(), text);
                    }
                }
            }
            _ => {}
        }
        self.0.push(Key { path, name, key, value: span, header });
    }

    /// The key `path` names; for a table with its own header, the header; for a key the file
    /// does not set, the nearest table it does.
    fn locate(&self, path: &[&str]) -> Option<Range<usize>> {
        (1..=path.len()).rev().find_map(|n| {
            let key = self.0.iter().find(|k| k.path.iter().map(String::as_str).eq(path[..n].iter().copied()))?;
            Some(if key.header { key.value.clone() } else { key.key.clone() })
        })
    }

    /// The name of the innermost key whose value holds `span`.
    fn name_at(&self, span: &Range<usize>) -> Option<&str> {
        self.0
            .iter()
            .filter(|k| k.value.start <= span.start && span.end <= k.value.end)
            .min_by_key(|k| k.value.len())
            .map(|k| k.name.as_str())
    }
}
