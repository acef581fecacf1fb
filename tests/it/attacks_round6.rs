//! Holes found by the sixth round of attacking pipe as an outsider would (`attack6`): the
//! authors of pull requests after a listing page over its bound.

use crate::attacks_round4::built;
use crate::support::docker::Docker;
use crate::support::git;

/// The README: "a page over 64 MiB (Gitea documents no bound on a description) ends the
/// listing with what it named, and each pull request with work the listing did not name, up to
/// 50, is asked for on its own […] so long descriptions cost only their own pull requests their
/// author". The 50 asked for are the first 50 of the tick's pull-request refs with work in the
/// order of their ref names (`engine::authors` collects `wanted` from the state's `BTreeMap` of
/// refs: `refs/pull/10/head` … `refs/pull/61/head` all sort before `refs/pull/9/head`), and
/// every pull request past them is `?`.
///
/// So Mallory opens 35 pull requests described in 2 MiB each (Gitea, listed first: the page is
/// cut before anything else is named) and 52 small ones with work, numbered after Alice's #9
/// as newer pull requests are. pipe asks for #10 … #59 on their own (all Mallory's), never for
/// Alice's #9: Alice's pull request is `?` together with Mallory's #60 and #61, which waited as
/// long and sort first, and Mallory takes all four builds of the tick (two as `mallory`, two as
/// `?`). Alice's commit, which the legitimate path (`author_bounds.rs`) and the fourth round's
/// test (Mallory with fewer pull requests) build in the same tick, waits. Any other contributor
/// whose pull request sorts after Mallory's fiftieth lands in the same `?` bucket: their pull
/// requests count as one author. (Seen as well: with two names Mallory also holds four previews
/// of `max_previews = 3`, and Alice's, the oldest idle one, is removed.) With 48 small pull
/// requests instead of 52 (#9 among the first 50 asked) the same test passes.
///
/// Fixed: the pull requests the listing did not name are asked for without a bound on their
/// number, none once 60 s have passed: using that up takes as many pull requests with work as
/// the forge answers in 60 s.
#[test]
fn fifty_pull_requests_after_a_cut_listing_page_do_not_make_another_authors_pull_request_unknown() {
    let Some(docker) = Docker::require() else { return };
    let Some((_probe, api, s)) = crate::author_bounds::stack_with_authors_on(&docker, "gitea") else { return };

    s.release("refs/heads/main", "main v1");
    api.set_pulls(&[("acme/app", 9, "alice")]);
    s.release("refs/pull/9/head", "alice v1");
    let (first, stderr) = built(&s);
    assert_eq!(first, vec!["refs/heads/main".to_string(), "refs/pull/9/head".to_string()], "{stderr}");

    // Mallory: 35 long descriptions listed first (no work), then 52 small pull requests with
    // work, #10 to #61 (one commit, pushed to every head and merge ref at once).
    s.repo.write("www/index.html", "mallory\n");
    git(&s.repo.work, &["add", "--all"]);
    git(&s.repo.work, &["commit", "--quiet", "--allow-empty", "-m", "mallory"]);
    let mut push: Vec<String> = ["push", "--quiet", "--force", "origin"].map(String::from).to_vec();
    for n in 10..=61 {
        push.push(format!("HEAD:refs/pull/{n}/head"));
        push.push(format!("HEAD:refs/pull/{n}/merge"));
    }
    git(&s.repo.work, &push.iter().map(String::as_str).collect::<Vec<_>>());
    let long = "x".repeat(2 << 20);
    let mut open: Vec<(&str, u32, &str, &str)> =
        (100..135).map(|n| ("acme/app", n, "mallory", long.as_str())).collect();
    open.extend((10..=61).map(|n| ("acme/app", n, "mallory", "a small change")));
    open.push(("acme/app", 9, "alice", "fixes the login page"));
    api.set_pulls_with_bodies(&open);
    // Alice pushes to hers in the same minute.
    s.release("refs/pull/9/head", "alice v2");

    let (tick, stderr) = built(&s);
    let asked: Vec<String> = api
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(String::from))
        .filter(|p| p.contains("/pulls/"))
        .collect();
    assert!(
        tick.contains(&"refs/pull/9/head".to_string()),
        "Alice's commit waits: the tick built {tick:?}; pipe asked the forge for {} pull requests on their own, \
         Alice's #9 {}:\n{stderr}",
        asked.len(),
        if asked.iter().any(|p| p.ends_with("/pulls/9")) { "among them" } else { "not among them" }
    );
}
