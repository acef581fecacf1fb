//! The span-tracking document: syntax errors, inline secrets, named tables and serde errors,
//! each reported at its `file:line:column`.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::{Diagnostic, line_column};

/// Keys that would hold a secret inline; each has `_env` and `_file` forms instead.
const INLINE_SECRET_KEYS: [&str; 5] = ["password", "secret", "token", "webhook_url", "ssh_key_passphrase"];

/// Parsing context: the text diagnostics point into, and the diagnostics so far.
pub(super) struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Cx { path, text, diagnostics: Vec::new() }
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
        reject_inline_secrets(self, &mut doc);
        Ok(doc)
    }

    pub(super) fn error(&mut self, span: Option<Range<usize>>, message: String) {
        let (line, column) = span.map(|s| line_column(self.text, s.start)).unwrap_or((1, 1));
        self.diagnostics.push(Diagnostic { path: self.path.to_path_buf(), line, column, message });
    }

    pub(super) fn de<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(err) => {
                self.error(err.span().or(Some(span)), err.message().to_string());
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
fn validate_name(name: &str) -> Result<(), &'static str> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 63 || !valid_chars || !starts_ok {
        return Err("expected 1 to 63 lowercase letters, digits, `-` or `_`, starting with a letter or digit");
    }
    Ok(())
}

/// Removes keys that would hold a secret inline, with a diagnostic that names the fix.
fn reject_inline_secrets(cx: &mut Cx<'_>, table: &mut DeTable<'_>) {
    let entries = std::mem::take(table);
    *table = entries
        .into_iter()
        .filter_map(|(key, mut value)| {
            let name: &str = key.get_ref().as_ref();
            if INLINE_SECRET_KEYS.contains(&name) {
                cx.error(
                    Some(key.span()),
                    format!(
                        "secrets are never written inline: use `{name}_env = \"VARIABLE\"` or `{name}_file = \"/path\"`"
                    ),
                );
                return None;
            }
            match value.get_mut() {
                DeValue::Table(inner) => reject_inline_secrets(cx, inner),
                DeValue::Array(items) => {
                    for item in items.iter_mut() {
                        if let DeValue::Table(inner) = item.get_mut() {
                            reject_inline_secrets(cx, inner);
                        }
                    }
                }
                _ => {}
            }
            Some((key, value))
        })
        .collect();
}
