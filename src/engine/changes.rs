//! Which images of a project with several a commit changes: a tree diff (git2, in the project's
//! cache repository, never a shell) between the commit and the last commit each image was built
//! from and passed its tests on this ref, else on the default branch when that build is an
//! ancestor of the commit (a new branch, a force push: the merge base's line). When nothing
//! trustworthy can be compared, the image is built, and the reason says why.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use git2::{Oid, Repository};

use super::plan::ImagePlan;
use crate::config::PathSet;
use crate::docker;
use crate::state::Tested;

/// What becomes of one image for a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Build it; `why` says what changed or why nothing could be compared.
    Build { why: String },
    /// Give the new commit's tags to the earlier build `from`: nothing under its paths changed.
    Reuse { from: Tested, why: String },
}

/// The tested builds one image may be compared with, in order of preference.
pub(crate) struct Bases<'a> {
    /// This ref's own record (its history's `tested`).
    pub own: &'a BTreeMap<String, Tested>,
    /// The default branch's name and record, when this ref is not the default branch.
    pub default: Option<(&'a str, &'a BTreeMap<String, Tested>)>,
}

/// Decides, for each image, whether `commit` needs a build: it does when a file under the
/// image's paths differs from the commit it was last built from and tested (on this ref, else
/// on the default branch), or when no such build is an ancestor of `commit` in `repo_dir`.
pub(crate) fn decide(
    repo_dir: &Path,
    commit: &str,
    images: &[ImagePlan],
    bases: &Bases<'_>,
) -> anyhow::Result<Vec<Decision>> {
    let repo =
        Repository::open(repo_dir).with_context(|| format!("cannot open the checkout `{}`", repo_dir.display()))?;
    let new = Oid::from_str(commit).with_context(|| format!("`{commit}` is not a commit id"))?;
    let new_tree =
        repo.find_commit(new).and_then(|c| c.tree()).with_context(|| format!("cannot read commit {commit}"))?;
    // The files each base commit's tree differs in, computed once per base.
    let mut diffs: BTreeMap<Oid, Vec<String>> = BTreeMap::new();
    let mut decisions = Vec::new();
    for image in images {
        let paths = PathSet::compile(&image.paths).map_err(|e| anyhow::anyhow!("image `{}`: {e}", image.name))?;
        let mut why_not = Vec::new();
        let mut candidates = vec![(None, bases.own.get(&image.name))];
        if let Some((branch, record)) = bases.default {
            candidates.push((Some(branch), record.get(&image.name)));
        }
        let mut decision = None;
        for (branch, tested) in candidates {
            let whose = branch.map(|b| format!("`{b}`'s ")).unwrap_or_default();
            let Some(tested) = tested else { continue };
            let short = docker::commit_tag(&tested.commit);
            let Ok(base) = Oid::from_str(&tested.commit) else { continue };
            if tested.recipe != image.recipe {
                why_not.push(format!("{whose}tested build {short} was made with other settings"));
                continue;
            }
            if repo.find_commit(base).is_err() {
                why_not.push(format!("{whose}tested build {short} is not in the cache repository"));
                continue;
            }
            if base != new && !repo.graph_descendant_of(new, base).unwrap_or(false) {
                why_not.push(format!("{whose}tested build {short} is not an ancestor (force push or new branch)"));
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = diffs.entry(base) {
                e.insert(changed_files(&repo, base, &new_tree)?);
            }
            let changed = diffs[&base].iter().find(|f| paths.covers(f));
            decision = Some(match changed {
                Some(file) => Decision::Build { why: format!("`{file}` changed since {whose}{short}") },
                None => Decision::Reuse { from: tested.clone(), why: format!("unchanged since {whose}{short}") },
            });
            break;
        }
        decisions.push(decision.unwrap_or_else(|| {
            let why = if why_not.is_empty() {
                "no tested build of it to compare with".to_string()
            } else {
                format!("nothing trustworthy to compare with: {}", why_not.join("; "))
            };
            Decision::Build { why }
        }));
    }
    Ok(decisions)
}

/// The paths (old and new sides) of every file that differs between `base`'s tree and `tree`.
fn changed_files(repo: &Repository, base: Oid, tree: &git2::Tree<'_>) -> anyhow::Result<Vec<String>> {
    let base_tree =
        repo.find_commit(base).and_then(|c| c.tree()).with_context(|| format!("cannot read commit {base}"))?;
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(tree), None)
        .with_context(|| format!("cannot compare {base} with the commit"))?;
    let mut files = Vec::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(path) = file.path().and_then(Path::to_str)
                && !files.iter().any(|f| f == path)
            {
                files.push(path.to_string());
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Repository, files: &[(&str, &str)], parent: Option<Oid>) -> Oid {
        let dir = repo.workdir().unwrap();
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parents: Vec<git2::Commit<'_>> = parent.map(|p| repo.find_commit(p).unwrap()).into_iter().collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "c", &tree, &parents).unwrap()
    }

    fn image(name: &str, paths: &[&str]) -> ImagePlan {
        ImagePlan {
            name: name.into(),
            image: format!("t/{name}"),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            test: None,
            recipe: "r1".into(),
        }
    }

    fn tested(commit: Oid, name: &str) -> Tested {
        let image = format!("t/{name}:{}", docker::commit_tag(&commit.to_string()));
        Tested { commit: commit.to_string(), image, recipe: "r1".into() }
    }

    #[test]
    fn only_images_whose_paths_changed_since_their_tested_build_are_built() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let c1 = commit(&repo, &[("api/a.py", "1"), ("front/i.html", "1"), ("README.md", "1")], None);
        let images = [image("api", &["api"]), image("front", &["front"])];
        let own = BTreeMap::from([("api".to_string(), tested(c1, "api")), ("front".to_string(), tested(c1, "front"))]);
        let bases = Bases { own: &own, default: None };
        let docs = commit(&repo, &[("README.md", "2")], Some(c1));
        let d = decide(dir.path(), &docs.to_string(), &images, &bases).unwrap();
        assert!(d.iter().all(|d| matches!(d, Decision::Reuse { .. })), "{d:?}");
        // The api's build failed at `docs`, so the next commit still compares with c1:
        // a change hidden behind a failed commit is never lost.
        let api = commit(&repo, &[("api/a.py", "2")], Some(docs));
        let after = commit(&repo, &[("README.md", "3")], Some(api));
        let d = decide(dir.path(), &after.to_string(), &images, &bases).unwrap();
        assert!(matches!(&d[0], Decision::Build { why } if why.contains("`api/a.py` changed")), "{d:?}");
        assert!(matches!(&d[1], Decision::Reuse { .. }), "{d:?}");
        // Nothing recorded: built, and said why.
        let empty = BTreeMap::new();
        let d = decide(dir.path(), &after.to_string(), &images, &Bases { own: &empty, default: None }).unwrap();
        assert!(matches!(&d[0], Decision::Build { why } if why.contains("no tested build")), "{d:?}");
        // A force push: the ref's record is not an ancestor; the default branch's is.
        // (The helper's work tree still holds later files: put c1's back.)
        let other = commit(&repo, &[("api/a.py", "1"), ("README.md", "1"), ("front/i.html", "x")], Some(c1));
        let forced =
            BTreeMap::from([("api".to_string(), tested(after, "api")), ("front".to_string(), tested(after, "front"))]);
        let main = BTreeMap::from([("api".to_string(), tested(c1, "api"))]);
        let bases = Bases { own: &forced, default: Some(("main", &main)) };
        let d = decide(dir.path(), &other.to_string(), &images, &bases).unwrap();
        assert!(
            matches!(&d[0], Decision::Reuse { why, .. } if why == &format!("unchanged since `main`'s {}", docker::commit_tag(&c1.to_string()))),
            "{d:?}"
        );
        assert!(matches!(&d[1], Decision::Build { why } if why.contains("not an ancestor")), "{d:?}");
        // A build made with other settings (a new context, Dockerfile, paths or build args in
        // the pipeline file) is never reused, whatever the files.
        let mut changed = images.clone();
        changed[1].recipe = "r2".into();
        let d = decide(dir.path(), &docs.to_string(), &changed, &Bases { own: &own, default: None }).unwrap();
        assert!(matches!(&d[0], Decision::Reuse { .. }), "{d:?}");
        assert!(matches!(&d[1], Decision::Build { why } if why.contains("other settings")), "{d:?}");
    }
}
