//! Which refs a project tracks, and how they changed since the last poll. Pure: no IO.
//!
//! The pull-request rule. GitHub keeps `refs/pull/N/head` of closed pull requests forever, so
//! the first poll of a project must not turn years of closed pull requests into builds:
//!
//! - A pull request whose `refs/pull/N/merge` (GitLab: `refs/merge-requests/N/merge`) is
//!   advertised is open, and is work like any branch.
//! - On the first successful poll of a project, every other pull-request head is recorded as a
//!   baseline: remembered, not reported, never built.
//! - After that, any pull-request head that appears or moves is work: a new pull request or a
//!   push to one. Heads that disappear are reported as deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::Project;
use crate::state::{ProjectState, RefState};

/// What kind of ref this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RefKind {
    Branch,
    PullRequest,
}

/// How a ref changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeKind {
    New,
    Updated,
    Deleted,
}

/// One reported change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    pub project: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub kind: RefKind,
    pub change: ChangeKind,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Classifies a full ref name; `None` for refs `pipe` never tracks (tags, notes, …).
pub(crate) fn classify(refname: &str) -> Option<RefKind> {
    if refname.strip_prefix("refs/heads/").is_some_and(|b| !b.is_empty()) {
        return Some(RefKind::Branch);
    }
    pr_number(refname, "/head").map(|_| RefKind::PullRequest)
}

/// `refs/pull/12/head` → `12` (and GitLab's `refs/merge-requests/12/head`), for the given suffix.
fn pr_number<'a>(refname: &'a str, suffix: &str) -> Option<&'a str> {
    let rest = refname.strip_prefix("refs/pull/").or_else(|| refname.strip_prefix("refs/merge-requests/"))?;
    let number = rest.strip_suffix(suffix)?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(number)
}

/// A pull request's number: `refs/pull/12/head` → 12; `None` for a branch.
pub(crate) fn pull_number(refname: &str) -> Option<u64> {
    pr_number(refname, "/head")?.parse().ok()
}

/// A short name for people: `dev`, `pull/12`, `merge-requests/12`.
pub(crate) fn display(refname: &str) -> &str {
    if let Some(branch) = refname.strip_prefix("refs/heads/") {
        return branch;
    }
    refname.strip_prefix("refs/").and_then(|r| r.strip_suffix("/head")).unwrap_or(refname)
}

/// Whether a remote's ref name may enter pipe: git's own rules (`git check-ref-format`, as
/// libgit2 implements them: no `..`, no component starting with `.`, no `~^:?*[\`, no control
/// characters, …), plus what is harmless to git but not to the terminals, journals, argv and
/// environments the name reaches: no control or bidirectional-formatting characters anywhere,
/// and no branch or path component starting with `-` (it would read as an option).
pub(crate) fn valid_name(refname: &str) -> bool {
    if refname == "HEAD" {
        return true;
    }
    let shown_safely =
        !refname.chars().any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'));
    shown_safely && !refname.split('/').any(|part| part.starts_with('-')) && git2::Reference::is_valid_name(refname)
}

/// A ref name as it may be shown anywhere: quoted, with control characters escaped.
pub(crate) fn escaped(refname: &str) -> String {
    format!("{refname:?}")
}

/// The heads a project follows out of everything a remote advertised.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tracked {
    /// Full ref name → commit id.
    pub heads: BTreeMap<String, String>,
    /// Pull-request head refs whose merge ref is advertised (open pull requests).
    pub open: BTreeSet<String>,
    /// Advertised names that fail [`valid_name`]: never tracked, never stored.
    pub rejected: Vec<String>,
}

/// Keeps the branches matching the project's patterns and, when enabled, pull-request heads.
/// Names that are not valid ref names are set aside in `rejected`.
pub(crate) fn tracked(project: &Project, advertised: &[(String, String)]) -> Tracked {
    let mut out = Tracked::default();
    for (refname, oid) in advertised {
        if !valid_name(refname) {
            out.rejected.push(refname.clone());
            continue;
        }
        match classify(refname) {
            Some(RefKind::Branch) => {
                let branch = &refname["refs/heads/".len()..];
                if project.tracks_branch(branch) {
                    out.heads.insert(refname.clone(), oid.clone());
                }
            }
            Some(RefKind::PullRequest) if project.pull_requests => {
                out.heads.insert(refname.clone(), oid.clone());
            }
            _ => {}
        }
    }
    if project.pull_requests {
        for (refname, _) in advertised {
            if let Some(n) = pr_number(refname, "/merge") {
                let head = format!("{}{n}/head", &refname[..refname.len() - "/merge".len() - n.len()]);
                if out.heads.contains_key(&head) {
                    out.open.insert(head);
                }
            }
        }
    }
    out
}

/// The result of comparing a poll with the state.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    pub changes: Vec<Change>,
    /// Pull-request heads recorded on the first poll without being reported or built.
    pub baseline: Vec<(String, String)>,
    /// Known pull requests that were closed (`true`) or reopened (`false`) without moving.
    pub closed: Vec<(String, bool)>,
}

impl Diff {
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.baseline.is_empty() && self.closed.is_empty()
    }
}

/// A tracked pull request whose merge ref is not advertised (closed or merged).
fn is_closed(now: &Tracked, refname: &str) -> bool {
    classify(refname) == Some(RefKind::PullRequest) && !now.open.contains(refname)
}

/// Compares what the remote has now with what the state remembers.
pub(crate) fn diff(project: &str, previous: Option<&ProjectState>, now: &Tracked) -> Diff {
    let first_poll = previous.is_none_or(|p| !p.indexed);
    let empty = BTreeMap::new();
    let known = previous.map_or(&empty, |p| &p.refs);
    let mut out = Diff::default();
    for (refname, oid) in &now.heads {
        let kind = classify(refname).unwrap_or(RefKind::Branch);
        let change = match known.get(refname) {
            Some(old) if old.head == *oid => {
                if old.closed != is_closed(now, refname) {
                    out.closed.push((refname.clone(), !old.closed));
                }
                continue;
            }
            Some(old) => (ChangeKind::Updated, Some(old.head.clone())),
            None if first_poll && kind == RefKind::PullRequest && !now.open.contains(refname) => {
                out.baseline.push((refname.clone(), oid.clone()));
                continue;
            }
            None => (ChangeKind::New, None),
        };
        out.changes.push(Change {
            project: project.to_string(),
            refname: refname.clone(),
            kind,
            change: change.0,
            from: change.1,
            to: Some(oid.clone()),
        });
    }
    for (refname, old) in known {
        if !now.heads.contains_key(refname) {
            out.changes.push(Change {
                project: project.to_string(),
                refname: refname.clone(),
                kind: classify(refname).unwrap_or(RefKind::Branch),
                change: ChangeKind::Deleted,
                from: Some(old.head.clone()),
                to: None,
            });
        }
    }
    out
}

/// Records a diff: new and moved heads become pending work, deleted refs are forgotten.
pub(crate) fn apply(state: &mut ProjectState, diff: &Diff, now: &Tracked, at: jiff::Timestamp) {
    state.indexed = true;
    for (refname, oid) in &diff.baseline {
        let record = RefState { head: oid.clone(), since: at, pending: false, last: None, closed: true };
        state.refs.insert(refname.clone(), record);
    }
    for (refname, closed) in &diff.closed {
        if let Some(entry) = state.refs.get_mut(refname) {
            entry.closed = *closed;
        }
    }
    for change in &diff.changes {
        match (&change.change, &change.to) {
            (ChangeKind::Deleted, _) | (_, None) => {
                state.refs.remove(&change.refname);
            }
            (_, Some(to)) => {
                let entry = state.refs.entry(change.refname.clone()).or_insert_with(|| RefState {
                    head: to.clone(),
                    since: at,
                    pending: true,
                    last: None,
                    closed: false,
                });
                entry.head = to.clone();
                entry.since = at;
                entry.pending = true;
                entry.closed = is_closed(now, &change.refname);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn project(pull_requests: bool) -> Project {
        let text = format!(
            "[project.p]\nrepo = \"file:///r\"\nbranches = [\"main\", \"feature/*\"]\npull_requests = {pull_requests}\n"
        );
        config::parse(std::path::Path::new("p.toml"), &text).unwrap().projects.remove("p").unwrap()
    }

    fn adv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(r, o)| (r.to_string(), o.to_string())).collect()
    }

    #[test]
    fn branches_follow_patterns_and_prs_need_opt_in() {
        let advertised = adv(&[
            ("HEAD", "1"),
            ("refs/heads/main", "1"),
            ("refs/heads/feature/x", "2"),
            ("refs/heads/feature/x/y", "3"),
            ("refs/heads/other", "4"),
            ("refs/tags/v1", "5"),
            ("refs/pull/3/head", "6"),
        ]);
        let got: Vec<_> = tracked(&project(false), &advertised).heads.into_keys().collect();
        assert_eq!(got, ["refs/heads/feature/x", "refs/heads/main"]);
        let got: Vec<_> = tracked(&project(true), &advertised).heads.into_keys().collect();
        assert_eq!(got, ["refs/heads/feature/x", "refs/heads/main", "refs/pull/3/head"]);
    }

    #[test]
    fn first_poll_baselines_closed_pull_requests_only() {
        let advertised = adv(&[
            ("refs/heads/main", "1"),
            ("refs/pull/1/head", "a"),
            ("refs/pull/2/head", "b"),
            ("refs/pull/2/merge", "m"),
            ("refs/merge-requests/9/head", "c"),
        ]);
        let now = tracked(&project(true), &advertised);
        let d = diff("p", None, &now);
        let new: Vec<_> = d.changes.iter().map(|c| c.refname.as_str()).collect();
        assert_eq!(new, ["refs/heads/main", "refs/pull/2/head"]);
        let base: Vec<_> = d.baseline.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(base, ["refs/merge-requests/9/head", "refs/pull/1/head"]);

        let mut state = ProjectState::default();
        apply(&mut state, &d, &now, jiff::Timestamp::UNIX_EPOCH);
        assert!(diff("p", Some(&state), &now).is_empty(), "a second poll of the same heads changes nothing");
        assert!(state.refs["refs/pull/1/head"].closed && !state.refs["refs/pull/2/head"].closed);

        // Pull request 2 is closed: its merge ref goes, its head stays. Nothing to build, but
        // the state learns it, so `pipe prune` can drop its images.
        let closed = tracked(
            &project(true),
            &adv(&[
                ("refs/heads/main", "1"),
                ("refs/pull/1/head", "a"),
                ("refs/pull/2/head", "b"),
                ("refs/merge-requests/9/head", "c"),
            ]),
        );
        let d = diff("p", Some(&state), &closed);
        assert!(d.changes.is_empty());
        assert_eq!(d.closed, [("refs/pull/2/head".to_string(), true)]);
        let mut after = state.clone();
        apply(&mut after, &d, &closed, jiff::Timestamp::UNIX_EPOCH);
        assert!(after.refs["refs/pull/2/head"].closed);
        assert!(diff("p", Some(&after), &closed).is_empty());

        let later = tracked(
            &project(true),
            &adv(&[("refs/heads/main", "1"), ("refs/pull/1/head", "a2"), ("refs/pull/5/head", "e")]),
        );
        let d = diff("p", Some(&state), &later);
        let got: Vec<_> = d.changes.iter().map(|c| (c.refname.as_str(), c.change)).collect();
        assert_eq!(
            got,
            [
                ("refs/pull/1/head", ChangeKind::Updated),
                ("refs/pull/5/head", ChangeKind::New),
                ("refs/merge-requests/9/head", ChangeKind::Deleted),
                ("refs/pull/2/head", ChangeKind::Deleted),
            ]
        );
        assert!(d.baseline.is_empty());
    }

    #[test]
    fn invalid_ref_names_are_rejected_and_never_tracked() {
        for bad in [
            "refs/heads/\x1b[31mred",
            "refs/heads/a\rb",
            "refs/heads/../../etc",
            "refs/heads/-rf",
            "refs/heads/feature/--help",
            "refs/heads/a..b",
            "refs/heads/x.lock",
            "refs/heads/a b",
            "refs/heads/rtl\u{202e}txt",
            "refs/heads/del\u{7f}",
            "refs/heads/c1\u{9b}",
        ] {
            assert!(!valid_name(bad), "{bad:?} was accepted");
        }
        for good in ["HEAD", "refs/heads/main", "refs/heads/feature/x-1", "refs/heads/ünïcode", "refs/pull/3/head"] {
            assert!(valid_name(good), "{good:?} was refused");
        }
        let advertised =
            adv(&[("refs/heads/main", "1"), ("refs/heads/main\x1b]0;pwned\x07", "2"), ("refs/pull/1/head\r", "3")]);
        let t = tracked(&project(true), &advertised);
        assert_eq!(t.heads.keys().collect::<Vec<_>>(), ["refs/heads/main"]);
        assert_eq!(t.rejected.len(), 2);
        assert_eq!(escaped(&t.rejected[0]), "\"refs/heads/main\\u{1b}]0;pwned\\u{7}\"");
    }

    #[test]
    fn display_names_are_short() {
        assert_eq!(display("refs/heads/feature/x"), "feature/x");
        assert_eq!(display("refs/pull/12/head"), "pull/12");
        assert_eq!(display("refs/merge-requests/3/head"), "merge-requests/3");
    }
}
