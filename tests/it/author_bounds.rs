//! One contributor cannot take what all share: Mallory opens five pull requests against a real
//! git remote while Alice has one open; the forge stand-in (`support/forge_api.py`, GitHub's
//! documented pull-request listing) names their authors. Mallory's pull requests take at most
//! `max_builds_per_author` builds of a tick and `max_previews_per_author` previews, evicting
//! only her own, so Alice's new commit is built in the same tick and her preview (real nginx,
//! real compose) keeps answering throughout.

use crate::previews::{of_project, stack_with};
use crate::support::Run;
use crate::support::docker::Docker;
use crate::support::forge_api::{ForgeApi, TOKEN};

/// The pull-request refs a `pipe run --json` built, sorted.
fn built(run: &Run) -> Vec<String> {
    let mut refs: Vec<String> = run.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["result"], "passed", "{r}");
            r["ref"].as_str().unwrap().to_string()
        })
        .collect();
    refs.sort();
    refs
}

/// A preview stack (`previews::stack_with`) whose project's forge is a GitHub stand-in that
/// names pull requests' authors: at most 4 builds a tick, 2 of one author's, 2 of one
/// author's previews of 3. The stand-in keeps its record in the returned directory: hold it.
pub(crate) fn stack_with_authors(
    docker: &Docker,
) -> Option<(crate::support::TestEnv, ForgeApi, crate::previews::Stack)> {
    stack_with_authors_on(docker, "github")
}

/// [`stack_with_authors`] with a stand-in of the forge `kind` (`github` or `gitea`).
pub(crate) fn stack_with_authors_on(
    docker: &Docker,
    kind: &str,
) -> Option<(crate::support::TestEnv, ForgeApi, crate::previews::Stack)> {
    let mut probe = crate::support::TestEnv::new();
    probe.env("FORGE_TOKEN", TOKEN);
    let api = ForgeApi::start(&probe, kind, None);
    let base = if kind == "gitea" { "/api/v1" } else { "" };
    let sections = format!(
        "max_builds = 4\nmax_builds_per_author = 2\nmax_previews_per_author = 2\n\n\
         [forge.gh]\nkind = \"{kind}\"\napi = \"http://127.0.0.1:{}{base}\"\ntoken_env = \"FORGE_TOKEN\"\n",
        api.port
    );
    let mut s = stack_with(docker, "max_previews = 3", false, &sections, "forge = \"gh\"\nforge_repo = \"acme/app\"")?;
    s.env.env("FORGE_TOKEN", TOKEN);
    Some((probe, api, s))
}

fn pulls(numbers: &[u32]) -> Vec<String> {
    let mut refs: Vec<String> = numbers.iter().map(|n| format!("refs/pull/{n}/head")).collect();
    refs.sort();
    refs
}

#[test]
fn many_pull_requests_of_one_author_neither_starve_another_authors_build_nor_evict_her_preview() {
    let Some(docker) = Docker::require() else { return };
    let Some((_probe, api, s)) = stack_with_authors(&docker) else { return };
    let run = |s: &crate::previews::Stack| {
        let run = s.env.pipe(&["run", "--json"]);
        assert_eq!(run.code, 0, "pipe run failed:\n{}\n{}", run.stdout, run.stderr);
        run
    };

    s.release("refs/heads/main", "main v1");
    api.set_pulls(&[("acme/app", 9, "alice")]);
    s.release("refs/pull/9/head", "alice v1");
    run(&s);
    s.answers(&s.host(9), "alice v1");

    // Mallory opens five pull requests; Alice pushes to hers in the same minute.
    let mut open = vec![("acme/app", 9, "alice")];
    for n in 1..=5 {
        s.release(&format!("refs/pull/{n}/head"), &format!("mallory {n}"));
        open.push(("acme/app", n, "mallory"));
    }
    api.set_pulls(&open);
    s.release("refs/pull/9/head", "alice v2");
    // Four builds a tick, two of them Mallory's at most: Alice's commit is one of this tick's.
    let tick = run(&s);
    assert_eq!(built(&tick), pulls(&[1, 2, 9]), "{}", tick.stderr);
    s.answers(&s.host(9), "alice v2");
    s.answers(&s.host(1), "mallory 1");
    s.answers(&s.host(2), "mallory 2");

    // Mallory's next previews take the place of her own, never of Alice's.
    let tick = run(&s);
    assert_eq!(built(&tick), pulls(&[3, 4]), "{}", tick.stderr);
    tick.stderr_has("the oldest idle one of `gh:mallory`").stderr_has("`max_previews_per_author` is 2");
    s.answers(&s.host(3), "mallory 3");
    s.answers(&s.host(4), "mallory 4");
    s.forgotten(&s.host(1));
    s.forgotten(&s.host(2));
    assert_eq!(of_project("ps --all", &s.preview(1)), Vec::<String>::new());
    s.answers(&s.host(9), "alice v2");
    let tick = run(&s);
    assert_eq!(built(&tick), pulls(&[5]), "{}", tick.stderr);
    s.answers(&s.host(5), "mallory 5");
    s.forgotten(&s.host(3));
    s.answers(&s.host(9), "alice v2");
    assert_eq!(of_project("ps --all", &s.preview(9)).len(), 1, "Alice's preview runs");

    // The forge was asked only as documented, for the authors of the pull requests with work.
    let requests = api.requests();
    let asked: Vec<_> =
        requests.iter().filter(|r| r["path"].as_str().unwrap().starts_with("/repos/acme/app/pulls")).collect();
    assert!(!asked.is_empty());
    assert!(requests.iter().all(|r| r["error"].is_null()), "{requests:#?}");
}
