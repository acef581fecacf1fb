//! Every value is encoded for where it goes: branches of a real git remote named to escape
//! their position in a link (`%2e%2e%2f`, `#`, `&`, `=`, `{commit}`, unicode) are built next to
//! `main`; the commit statuses the forge stand-in receives (`target_url` from a template, and
//! the status page's links), the Slack messages and the page's own links keep each name inside
//! its component, and every link leads to the page of exactly that ref on a real `pipe serve`.

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::http::HttpSink;
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port};

const BRANCHES: [&str; 6] =
    ["main", "feature/%2e%2e%2f%2e%2e%2fadmin", "x#frag&admin=1", "caf\u{e9}-\u{2603}", "{commit}", "a%20b"];

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[test]
fn branch_names_built_to_escape_their_position_in_a_link_stay_in_it_and_every_link_leads_to_its_ref() {
    let Some(docker) = Docker::require() else { return };
    let mut env = TestEnv::new();
    let slack = HttpSink::start(200);
    env.env("FORGE_TOKEN", TOKEN).env("SLACK_URL", &slack.url("/hook"));
    let api = ForgeApi::start(&env, "github", None);
    let name = unique_name("links").replace("pipe-test-", "");
    let (templated, paged) = (format!("{name}-t"), format!("{name}-p"));
    let _images = [ProjectImages { project: templated.clone() }, ProjectImages { project: paged.clone() }];
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\n", docker.base_image)).write(".pipe.toml", "test = \"true\"\n");
    for branch in BRANCHES {
        repo.commit_to(branch, &format!("on {branch}"));
    }
    let port = free_port();
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"
max_builds = 20

[notify.slack]
webhook_url_env = "SLACK_URL"
on = ["success"]

[serve.page]
enabled = true
public_url = "http://127.0.0.1:{port}/"

[forge.templated]
kind = "github"
api = "http://127.0.0.1:{api}"
token_env = "FORGE_TOKEN"
target_url = "https://ci.example.com/p/{{project}}/r/{{ref}}?commit={{commit}}"

[forge.paged]
kind = "github"
api = "http://127.0.0.1:{api}"
token_env = "FORGE_TOKEN"

[project.{templated}]
repo = "{url}"
branches = ["**"]
image = "pipe-test/{templated}"
forge = "templated"
forge_repo = "acme/app"

[project.{paged}]
repo = "{url}"
branches = ["**"]
image = "pipe-test/{paged}"
forge = "paged"
forge_repo = "acme/app"
"#,
        ws = env.path().join("work").display(),
        api = api.port,
        url = repo.url(),
    ));
    let run = env.pipe(&["run", "--json"]);
    run.code(0);
    assert_eq!(run.json()["results"].as_array().unwrap().len(), 2 * BRANCHES.len(), "{}", run.stdout);

    let requests = api.requests();
    assert!(requests.iter().all(|r| r["status"] == 201), "the stand-in refused a status: {requests:#?}");
    let links: Vec<String> = requests.iter().map(|r| r["body"]["target_url"].as_str().unwrap().to_string()).collect();
    // The template's links: the ref is one path segment, the commit the one query value.
    let prefix = format!("https://ci.example.com/p/{templated}/r/");
    let mut seen = Vec::new();
    for link in links.iter().filter(|l| l.starts_with("https://ci.example.com/")) {
        let rest = link.strip_prefix(&prefix).unwrap_or_else(|| panic!("the link left its path: {link}"));
        let (segment, query) = rest.split_once("?commit=").unwrap_or_else(|| panic!("{link}"));
        assert!(!segment.contains(['/', '?', '#', '&', ' ', '{']), "{link}");
        assert!(query.bytes().all(|b| b.is_ascii_hexdigit()), "{link}");
        seen.push(decode(segment));
    }
    seen.sort();
    seen.dedup();
    let mut expected: Vec<String> = BRANCHES.iter().map(|b| format!("refs/heads/{b}")).collect();
    expected.sort();
    assert_eq!(seen, expected);

    // The page's links, in the statuses and in Slack, each open that ref's run on the page.
    let serve = Serve::start_on(&env, port).expect("pipe serve on the page's port");
    let page_links: Vec<&String> = links.iter().filter(|l| l.starts_with("http://127.0.0.1")).collect();
    assert!(!page_links.is_empty(), "{links:#?}");
    let slack_links: Vec<String> =
        slack.taken().iter().map(|r| r.json()["attachments"][0]["title_link"].as_str().unwrap().to_string()).collect();
    assert_eq!(slack_links.len(), 2 * BRANCHES.len());
    for branch in BRANCHES {
        let refname = format!("refs/heads/{branch}");
        for link in page_links.iter().map(|l| l.as_str()).chain(slack_links.iter().map(String::as_str)) {
            let query = link.split_once('?').unwrap().1;
            let params: Vec<(String, String)> = query
                .split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{link}"));
                    (k.to_string(), decode(v))
                })
                .collect();
            let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
            assert!(keys == ["project", "ref"] || keys == ["project", "ref", "run"], "{link}");
            if params[1].1 != refname {
                continue;
            }
            let path = link.strip_prefix(&format!("http://127.0.0.1:{port}")).unwrap();
            let (code, _, body) = serve.get(path, &[]);
            assert_eq!(code, 200, "{link}: {body}");
            assert!(body.contains(&html_escape(branch)), "{link} does not show `{branch}`: {body}");
        }
    }
    // And the page's own links to each ref lead there too.
    let (code, _, overview) = serve.get("/status", &[]);
    assert_eq!(code, 200);
    let hrefs: Vec<String> = overview
        .split("href=\"")
        .skip(1)
        .filter_map(|h| h.split('"').next())
        .filter(|h| h.contains("/status/ref?"))
        .map(|h| h.replace("&amp;", "&"))
        .collect();
    assert_eq!(hrefs.len(), 2 * BRANCHES.len(), "{overview}");
    for href in hrefs {
        let path = href.strip_prefix(&format!("http://127.0.0.1:{port}")).unwrap_or(&href);
        let (code, _, body) = serve.get(path, &[]);
        let refname = decode(href.split("&ref=").nth(1).unwrap());
        let branch = refname.strip_prefix("refs/heads/").unwrap();
        assert_eq!(code, 200, "{href}");
        assert!(body.contains(&html_escape(branch)), "{href}: {body}");
    }
}
