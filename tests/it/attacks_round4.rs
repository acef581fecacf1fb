//! Holes found by the fourth round of attacking pipe as an outsider would. Each test is the
//! attack that found its hole, beside the legitimate path; each failed before its fix.

use crate::attacks::label_attack;
use crate::support::docker::Docker;

/// The README: an untrusted ref's "Dockerfile may not `LABEL` a `com.docker.compose.*` or
/// `com.docker.stack.*` key (nor a key made of a variable)", since the legacy builder's step
/// containers would carry it and pass for containers of another project's service while the
/// build runs. The check (`trust::dockerfile::claimed_label`) strips quotes from a key but not
/// the builder's escapes: the builder expands a `LABEL` key as a shell word, so
/// `com\.docker\.compose\.project` is `com.docker.compose.project` to it, while the check sees
/// a key that starts with `com\.` and a text that never contains `com.docker.compose.`. The
/// first round's attack, with its keys written so, breaks the other project's deploy again.
///
/// Fixed: keys are compared without their quotes and escape characters.
#[test]
fn a_pull_request_label_key_written_with_escapes_cannot_pose_as_another_projects_service() {
    label_attack(
        "LABEL com\\.docker\\.compose\\.project={victim} com\\.docker\\.compose\\.service=web com\\.docker\\.compose\\.oneoff=False",
    );
}

/// The same attack with the keys written plainly, after an empty line inside the `LABEL`'s
/// continuation: the builder skips an empty continuation line (with a warning) and reads on,
/// while the check ends the instruction there and reads the keys as an instruction of their own.
///
/// Fixed: the check skips empty lines inside a continuation, as the builder does.
#[test]
fn a_pull_request_label_continued_past_an_empty_line_cannot_pose_as_another_projects_service() {
    label_attack(
        "LABEL org.example.note=x \\\n\n  com.docker.compose.project={victim} com.docker.compose.service=web com.docker.compose.oneoff=False",
    );
}

/// The README: "at most `pipe.max_builds_per_author` (default 2) of them pull requests of one
/// author, so a contributor who opens many pull requests cannot take every build of a tick";
/// the authors come from the forge's listing of open pull requests, "at most 10 pages of 8
/// MiB", and "when the forge does not answer (or names no author for a pull request), its pull
/// requests count as one author (`?`) that tick". But the listing carries what each author
/// wrote, their pull requests' descriptions (GitHub allows 65,536 characters each), and one page
/// over 8 MiB fails the whole listing (`forge::pulls::authors` returns the error of
/// `forge::discover::get`, keeping none of what it read). So Mallory, who opens a few dozen pull
/// requests with long descriptions (4-byte characters: 256 KiB each as the forge sends them),
/// makes every pull request of the project `?`: her own and Alice's share one author's two
/// builds a tick, and Mallory's, which waited longer, take them. Alice's commit, which the
/// legitimate path (`author_bounds.rs`) builds in the same tick, waits.
///
/// Fixed: the listing is read one pull request at a time (a page up to 64 MiB, one pull
/// request up to 8 MiB); one too long is left without an author, and the others keep theirs.
#[test]
fn long_pull_request_descriptions_do_not_let_one_author_take_every_build_of_a_tick() {
    // Each described at GitHub's length limit (4-byte characters: 256 KiB as the forge sends it).
    mallory_describes_at_length("github", &"\u{1F600}".repeat(65_536));
}

/// Gitea documents no bound on a description and lists 50 pull requests a page: Mallory's 35,
/// described in 2 MiB each, make the page holding them and Alice's over the listing's 64 MiB
/// bound, which failed the whole listing (every pull request of the project `?`, as above).
/// Fixed: a page over its bound ends the listing with what it named, and a pull request with
/// work it did not name (Alice's, listed after Mallory's) is asked for on its own.
#[test]
fn a_gitea_listing_page_over_its_bound_costs_only_the_long_pull_requests_their_author() {
    mallory_describes_at_length("gitea", &"x".repeat(2 << 20));
}

/// One tick of `pipe run --json`: the refs it ran, sorted, and what it said on stderr.
pub(crate) fn built(s: &crate::previews::Stack) -> (Vec<String>, String) {
    let run = s.env.pipe(&["run", "--json"]);
    assert_eq!(run.code, 0, "pipe run failed:\n{}\n{}", run.stdout, run.stderr);
    let mut refs: Vec<String> =
        run.json()["results"].as_array().unwrap().iter().map(|r| r["ref"].as_str().unwrap().to_string()).collect();
    refs.sort();
    (refs, run.stderr.clone())
}

/// Mallory opens five pull requests with work and 30 more, each with `description`, listed
/// before Alice's; Alice pushes to hers in the same minute: her commit is built in that tick.
fn mallory_describes_at_length(kind: &str, description: &str) {
    let Some(docker) = Docker::require() else { return };
    let Some((_probe, api, s)) = crate::author_bounds::stack_with_authors_on(&docker, kind) else { return };
    let pulls = |numbers: &[u32]| {
        let mut refs: Vec<String> = numbers.iter().map(|n| format!("refs/pull/{n}/head")).collect();
        refs.sort();
        refs
    };

    s.release("refs/heads/main", "main v1");
    api.set_pulls(&[("acme/app", 9, "alice")]);
    s.release("refs/pull/9/head", "alice v1");
    let (first, stderr) = built(&s);
    assert_eq!(first, vec!["refs/heads/main".to_string(), pulls(&[9])[0].clone()], "{stderr}");

    let mut open = Vec::new();
    for n in (1..=5).chain(10..=39) {
        if n <= 5 {
            s.release(&format!("refs/pull/{n}/head"), &format!("mallory {n}"));
        }
        open.push(("acme/app", n, "mallory", description));
    }
    open.push(("acme/app", 9, "alice", "fixes the login page"));
    api.set_pulls_with_bodies(&open);
    s.release("refs/pull/9/head", "alice v2");

    // Four builds a tick, two of them Mallory's at most: Alice's commit is one of this tick's.
    let (tick, stderr) = built(&s);
    assert_eq!(tick, pulls(&[1, 2, 9]), "Mallory's pull requests took every build of the tick:\n{stderr}");
    assert!(!stderr.contains("authors of its pull requests are unknown"), "{stderr}");
    let requests = api.requests();
    assert!(requests.iter().all(|r| r["error"].is_null()), "only what the forge documents was asked");
}
