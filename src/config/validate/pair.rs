//! A secret named one of two ways in one table (`KEY_env` or `KEY_file`), and how many of
//! the two may be set.

use crate::config::document::Cx;

/// A secret named one of two ways in one table: `KEY_env` (a variable) or `KEY_file`.
#[derive(Clone, Copy)]
pub(super) struct Pair<'p> {
    table: &'p [&'p str],
    key: &'p str,
    env: bool,
    file: bool,
}

/// How many halves of a [`Pair`] may be set.
#[derive(Clone, Copy)]
pub(super) enum Need {
    AtMostOne,
    ExactlyOne,
}

impl<'p> Pair<'p> {
    pub(super) fn new<F>(table: &'p [&'p str], key: &'p str, env: &Option<String>, file: &Option<F>) -> Self {
        Pair { table, key, env: env.is_some(), file: file.is_some() }
    }

    pub(super) fn any(&self) -> bool {
        self.env || self.file
    }

    /// Reports `message` when the pair breaks `need`: at the later of the two keys when both are
    /// set, at the table when neither is. Returns whether it reported.
    pub(super) fn check(&self, cx: &mut Cx<'_>, need: Need, message: impl FnOnce() -> String) -> bool {
        let both = self.env && self.file;
        let broken = match need {
            Need::AtMostOne => both,
            Need::ExactlyOne => self.env == self.file,
        };
        if !broken {
            return false;
        }
        let half = |suffix: &str| {
            let key = format!("{}_{suffix}", self.key);
            cx.locate(&[self.table, &[key.as_str()]].concat())
        };
        let span = if both { half("env").into_iter().chain(half("file")).max_by_key(|s| s.start) } else { None };
        let span = span.or_else(|| cx.locate(self.table));
        cx.error(span, message());
        true
    }
}
