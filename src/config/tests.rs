use std::path::Path;

use super::repo::HOST_SIDE_KEYS;
use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("p.toml"), text) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../pipeline.example.toml");
    let config = parse(Path::new("pipeline.example.toml"), text)
        .unwrap_or_else(|d| panic!("{}", d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")));
    assert!(config.projects.contains_key("project1"));
    assert!(config.projects.contains_key("project2"));
    assert!(config.notify.slack.is_some());
}

#[test]
fn unknown_key_is_located() {
    let errs = errors("[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\nbranchez = 1\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("p.toml:4:1: unknown field `branchez`"), "{errs:?}");
}

#[test]
fn every_error_is_reported() {
    let text = "[pipe]\nkeep_logs = \"many\"\n\n[project.a]\nrepo = \"x\"\n\n[project.B]\nrepo = \"y\"\nbranches = [\"m\"]\n\n[project.c]\nrepo = \"z\"\nbranches = [\"feature/[\"]\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs.iter().any(|e| e.starts_with("p.toml:2:13:") && e.contains("expected u32")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("missing field `branches`")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.starts_with("p.toml:7:10: invalid project name `B`")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.starts_with("p.toml:13:13: invalid branch pattern `feature/[`")), "{errs:#?}");
}

#[test]
fn inline_secret_is_refused_with_the_fix() {
    let errs = errors("[registry.r]\nurl = \"r.example.com\"\nusername = \"u\"\npassword = \"hunter2\"\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("use `password_env"), "{errs:?}");
    assert!(!errs[0].contains("hunter2"), "{errs:?}");
}

#[test]
fn a_password_in_a_url_is_refused_where_it_stands() {
    let text = "[registry.r]\nurl = \"ci:hunter2@r.example.com\"\n\n[project.a]\nrepo = \"https://ci:hunter2@git.example.com/a.git\"\nbranches = [\"main\"]\n\n[[project.a.deploy]]\nbranches = [\"main\"]\ncommand = { argv = [\"curl\", \"https://u:hunter2@h/x\"] }\nhealth = { url = \"http://u:$PW@h/x\" }\n";
    let mut errs = errors(text);
    errs.sort_by_key(|e| e.split(':').nth(1).and_then(|l| l.parse::<u32>().ok()));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("p.toml:2:7: `url`: a password is never written inline"), "{errs:#?}");
    assert!(errs[0].contains("(`ci:***@r.example.com`)") && errs[0].contains("password_env"), "{errs:#?}");
    assert!(
        errs[1].starts_with("p.toml:5:8: `repo`:") && errs[1].contains("https://ci:***@git.example.com"),
        "{errs:#?}"
    );
    assert!(errs[1].contains("hint: drop it from the URL") && errs[1].contains("token_env"), "{errs:#?}");
    assert!(errs[2].starts_with("p.toml:10:29: `argv`:") && errs[2].contains("`$VARIABLE`"), "{errs:#?}");
    assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:#?}");
    // A user without a password, scp-like remotes and a shell's `$VARIABLE` are not inline secrets.
    let ok = "[project.a]\nrepo = \"git@github.com:o/a.git\"\nbranches = [\"main\"]\n[project.b]\nrepo = \"https://ci@h/b.git\"\nbranches = [\"main\"]\n";
    assert!(errors(ok).is_empty(), "{:?}", errors(ok));
    // A repository's own file may spell its test database's URL with a password.
    assert!(parse_repo_file(Path::new(".pipe.toml"), "test_env = { DB = \"postgres://t:t@db/t\" }\n").is_ok());
}

#[test]
fn a_target_env_takes_literals_and_secrets_from_one_source() {
    let text = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n[[project.a.deploy]]\nname = \"prod\"\nbranches = [\"main\"]\ncommand = { argv = [\"true\"] }\nenv = { MODE = \"prod\", DB = { env = \"PROD_DB\" }, NPM = { command = [\"pass\", \"show\", \"npm\"], timeout = \"5s\" }, BAD = { env = \"A\", command = [\"b\"] }, PIPE_TAG = \"x\", E = { command = [] }, T = { env = \"A\", timeout = \"1s\" } }\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.contains("`deploy.prod.env.BAD` takes exactly one of `env`, `file` and `command`")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("`deploy.prod.env.PIPE_TAG`: `PIPE_*` variables are set by pipe")),
        "{errs:#?}"
    );
    assert!(errs.iter().any(|e| e.contains("`deploy.prod.env.E.command` is an argv list")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("`deploy.prod.env.T.timeout` goes with `command` only")), "{errs:#?}");
    let good = text.split(", BAD").next().unwrap().to_string() + " }\n";
    let config = parse(Path::new("p.toml"), &good).unwrap_or_else(|e| panic!("{e:#?}"));
    let refs = config.secret_refs();
    let npm = refs.iter().find(|(k, _)| k == "project.a.deploy.prod.env.NPM").map(|(_, r)| r.clone());
    assert_eq!(
        npm,
        Some(SecretRef::Command {
            argv: vec!["pass".into(), "show".into(), "npm".into()],
            timeout: std::time::Duration::from_secs(5)
        })
    );
    assert!(refs.iter().any(|(k, r)| k == "project.a.deploy.prod.env.DB" && *r == SecretRef::Env("PROD_DB".into())));
}

/// A secret command runs on the host: a repository's `.pipe.toml` can never name one.
#[test]
fn a_repository_file_cannot_name_a_secret_command() {
    for text in [
        "build_args = { X = { command = [\"touch\", \"/tmp/pwned\"] } }\n",
        "test_env = { X = { command = [\"touch\", \"/tmp/pwned\"] } }\n",
        "env = { X = { command = [\"touch\", \"/tmp/pwned\"] } }\n",
    ] {
        let errs = parse_repo_file(Path::new(".pipe.toml"), text).expect_err(text);
        assert!(!errs.is_empty(), "{text}");
    }
}

#[test]
fn unknown_registry_in_push_is_located() {
    let text = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n[[project.a.deploy]]\nbranches = [\"main\"]\npush = [\"prod\"]\n";
    let errs = errors(text);
    assert_eq!(errs, vec!["p.toml:6:9: unknown registry `prod` (registries: none are defined)"]);
}

/// Lines a pipeline file is made of, good and bad, for the fragment property test.
fn arb_document() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let section = proptest::sample::select(vec![
        "[pipe]",
        "[pipe.timeouts]",
        "[project.a]",
        "[project.B]",
        "[[project.a.deploy]]",
        "[registry.r]",
        "[serve]",
        "[serve.hooks.h]",
        "[ingress]",
        "[notify.slack]",
        "[unknown]",
        "[project.a.auth]",
    ]);
    let key = proptest::sample::select(vec![
        "repo",
        "branches",
        "image",
        "test",
        "push",
        "compose",
        "swarm",
        "command",
        "webhook",
        "url",
        "password",
        "password_env",
        "token_env",
        "secret_env",
        "keep_logs",
        "keep_images",
        "timeout",
        "parallel",
        "domain",
        "listen",
        "ingress",
        "health",
        "name",
        "images",
        "username",
        "body_size",
        "build",
        "workspace",
    ]);
    let value = proptest::sample::select(vec![
        "\"x\"",
        "[\"dev\"]",
        "[\"feature/[\"]",
        "1",
        "-1",
        "0",
        "true",
        "{ file = \"f\" }",
        "{ argv = [] }",
        "{ argv = [\"true\"] }",
        "{ shell = \"x\" }",
        "\"10m\"",
        "\"bad dur\"",
        "[]",
        "\"a b\"",
        "99999999999999999999",
        "{ api = 8080 }",
        "{ API = 0 }",
        "\"http://x\"",
        "{ url = \"u\" }",
        "[\"r\"]",
        "\"127.0.0.1:1\"",
        "\"\"",
        "{",
    ]);
    let line = prop_oneof![
        section.prop_map(str::to_string),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,20}",
    ];
    proptest::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

// Property tests (`prop_*`): `bench/run.sh` runs them with many more cases.
proptest::proptest! {
    #[test]
    fn prop_any_document_is_accepted_or_every_error_is_located(text in arb_document()) {
        if let Err(diagnostics) = parse(Path::new("p.toml"), &text) {
            proptest::prop_assert!(!diagnostics.is_empty());
            let lines = text.lines().count().max(1);
            for d in &diagnostics {
                proptest::prop_assert!(d.line >= 1 && d.line <= lines + 1 && d.column >= 1, "{d} in\n{text}");
            }
        }
    }

    #[test]
    fn prop_arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse(Path::new("p.toml"), &text);
    }

    #[test]
    fn prop_repo_files_never_define_host_side_keys(text in arb_document()) {
        if parse_repo_file(Path::new(".pipe.toml"), &text).is_ok() {
            for key in HOST_SIDE_KEYS {
                proptest::prop_assert!(!text.lines().any(|l| l.trim_start().starts_with(&format!("{key} ="))), "{text}");
            }
        }
    }
}

/// Rules checked after serde point at the key they are about (or at the header of the table that
/// lacks it), not at `1:1`.
#[test]
fn cross_field_errors_point_at_their_key() {
    let project = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n";
    let cases = [
        (format!("{project}[pipe]\nparallel = 0\n"), "p.toml:5:1: `pipe.parallel` must be at least 1"),
        (format!("{project}[pipe]\nmax_builds = 0\n"), "p.toml:5:1: `pipe.max_builds` must be at least 1"),
        (
            format!("{project}[pipe]\nparallel = 2\nmax_builds_per_author = 0\n"),
            "p.toml:6:1: `pipe.max_builds_per_author` must be at least 1",
        ),
        (
            format!("{project}[pipe]\nmax_previews_per_author = 0\n"),
            "p.toml:5:1: `pipe.max_previews_per_author` must be at least 1",
        ),
        (
            "\n[registry.r]\nusername = \"u\"\nurl = \"https://r\"\n".to_string(),
            "p.toml:4:1: registry `r`: `url` is a registry host like `registry.example.com[:port][/prefix]`, without a scheme",
        ),
        (
            "# registries\n[registry.r]\nurl = \"r\"\npassword_env = \"P\"\n".to_string(),
            "p.toml:2:1: registry `r`: `username` is required with a password",
        ),
        (
            "\n[registry.r]\nurl = \"r\"\nusername = \"u\"\npassword_env = \"P\"\npassword_file = \"/p\"\n".to_string(),
            "p.toml:6:1: registry `r`: set one of `password_env` and `password_file`, not both",
        ),
        (
            "\n[registry.r]\nurl = \"r\"\nusername = \"u\"\npassword_env = \"P\"\necr = { region = \"eu\" }\n"
                .to_string(),
            "p.toml:6:1: registry `r`: `ecr` logs in by itself; drop `password_env`/`password_file`",
        ),
        (
            "# notify\n[notify.slack]\non = [\"failure\"]\n".to_string(),
            "p.toml:2:1: `notify.slack`: set exactly one of `webhook_url_env` and `webhook_url_file`",
        ),
        (
            "[notify]\nwebhook = { url_file = \"/u\", url_env = \"U\" }\n".to_string(),
            "p.toml:2:30: `notify.webhook`: set exactly one of `url_env` and `url_file`",
        ),
        ("[project.a]\nbranches = [\"main\"]\nrepo = \" \"\n".to_string(), "p.toml:3:1: project `a`: `repo` is empty"),
        (
            "[project.a]\nrepo = \"x\"\nbranches = []\n".to_string(),
            "p.toml:3:1: project `a`: `branches` is empty; list at least one branch or pattern",
        ),
        (
            format!("{project}auth = {{ token_env = \"T\", token_file = \"/t\" }}\n"),
            "p.toml:4:27: project `a`: `auth`: set one of `token_env` and `token_file`, not both",
        ),
        (
            format!(
                "{project}[[project.a.deploy]]\nbranches = [\"main\"]\nwebhook = {{ url = \"https://h\", secret_file = \"/s\", secret_env = \"S\" }}\n"
            ),
            "p.toml:6:52: project `a`: `webhook`: set one of `secret_env` and `secret_file`, not both",
        ),
        (
            "[serve.hooks.h]\ncommand = { argv = [\"true\"] }\ntoken_file = \"/t\"\ntoken_env = \"T\"\n".to_string(),
            "p.toml:4:1: hook `h`: set one of `*_env` and `*_file` for each credential, not both",
        ),
        (
            "[ingress]\ndomain = \"x\"\nlisten = \"80 x\"\n".to_string(),
            "p.toml:3:1: `ingress.listen` must be a port or `address:port`",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(errors(&text), vec![expected.to_string()], "{text}");
    }
}

#[test]
fn an_invalid_duration_names_its_key() {
    let errs = errors("[pipe.timeouts]\npoll = \"0s\"\n");
    assert_eq!(errs, vec!["p.toml:2:8: `pipe.timeouts.poll`: invalid duration `0s`: must be longer than zero"]);
    let text = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n[[project.a.deploy]]\nbranches = [\"main\"]\n\
                command = { argv = [\"true\"] }\nhealth = { url = \"http://h\", timeout = \"-1m\" }\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        vec!["p.toml:7:40: `project.a.deploy.health.timeout`: invalid duration `-1m`: must be longer than zero"]
    );
}

/// Rules about one key of a deploy target or a hook point at that key, not at the entry's header.
#[test]
fn target_errors_point_at_their_key() {
    let deploy = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n[[project.a.deploy]]\nbranches = [\"main\"]\n";
    let hook = "# receiver\n[serve.hooks.h]\ntoken_env = \"T\"\n";
    let cases = [
        (format!("{deploy}command = {{ argv = [] }}\n"), "p.toml:6:13: project `a`: `command.argv` is empty"),
        (
            format!("{deploy}webhook = {{ url = \"ftp://h\" }}\n"),
            "p.toml:6:13: project `a`: `webhook.url` must start with `http://` or `https://`",
        ),
        (
            format!("{deploy}command = {{ argv = [\"true\"] }}\ningress = {{ api = 0 }}\n"),
            "p.toml:7:13: project `a`: ingress service `api` needs a port from 1 to 65535",
        ),
        (
            "[serve.hooks.h]\nsecret_env = \"S\"\ndocker_puller = true\ncommand = { shell = \"x\" }\n".to_string(),
            "p.toml:3:1: hook `h`: `docker_puller = true` needs a `token_env` or `token_file`",
        ),
        (
            format!("{hook}compose = {{ file = \"c.yml\" }}\n"),
            "p.toml:2:1: hook `h` deploys images: list the repositories it may run in `images`, so a leaked secret cannot run an arbitrary image",
        ),
        (
            format!("{hook}command = {{ argv = [\"true\"] }}\nimages = [\"a/[\"]\n"),
            "p.toml:5:1: hook `h`: invalid image pattern `a/[`: unclosed character class; missing ']'",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(errors(&text), vec![expected.to_string()], "{text}");
    }
}

/// Regression: `compose = ["file", "proj", ["svc"]]` was taken as the table's fields in order.
#[test]
fn array_forms_of_tables_are_refused_at_their_key() {
    let text = "[project.a]\nrepo = \"file:///r\"\nbranches = [\"main\"]\n\n[[project.a.deploy]]\nbranches = [\"main\"]\ncompose = [\"/srv/c.yml\", \"proj\", [\"svc\"]]\n";
    let errors = parse(Path::new("p.toml"), text).unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        shown.iter().any(|d| d.starts_with("p.toml:7:1: `compose` is a table: write `compose = { key = value, … }`")),
        "{shown:?}"
    );
}

#[test]
fn previews_need_an_ingress_target_pull_requests_and_a_plain_host_template() {
    let base = |ingress: &str, project: &str, target: &str| {
        format!(
            "{ingress}\n[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n{project}\n[[project.a.deploy]]\nbranches = [\"main\"]\n\
             compose = {{ file = \"/srv/a.yml\" }}\n{target}\n"
        )
    };
    let upstreams = "[ingress]\nupstreams = \"/etc/nginx/pipe\"\n";
    let good = base(upstreams, "pull_requests = true", "ingress = { web = 80 }\npreviews = true");
    assert_eq!(errors(&good), Vec::<String>::new());
    let errs = errors(&base("", "pull_requests = true", "ingress = { web = 80 }\npreviews = true"));
    assert!(errs.len() == 1 && errs[0].contains("`upstreams` in `[ingress]`"), "{errs:?}");
    let errs = errors(&base(upstreams, "", "ingress = { web = 80 }\npreviews = true"));
    assert!(errs.len() == 1 && errs[0].contains("set `pull_requests = true`"), "{errs:?}");
    let errs = errors(&base(upstreams, "pull_requests = true", "ingress = { web = 80, api = 81 }\npreviews = true"));
    assert!(errs.len() == 1 && errs[0].contains("needs `{service}`"), "{errs:?}");
    for template in ["pr.{project}.{domain}", "pr-{pr}.{x}.{domain}", "pr-{pr};.{domain}", "pr-{pr}..{domain}"] {
        let target = format!("ingress = {{ web = 80 }}\npreviews = true\npreview_host = \"{template}\"");
        let errs = errors(&base(upstreams, "pull_requests = true", &target));
        assert!(errs.len() == 1 && errs[0].contains("`preview_host` must name a host"), "{template}: {errs:?}");
    }
    // Previews of two projects must never share a name: `{project}` or the project's own name.
    let shared = "ingress = { web = 80 }\npreviews = true\npreview_host = \"pr-{pr}.{domain}\"";
    let errs = errors(&base(upstreams, "pull_requests = true", shared));
    assert!(errs.len() == 1 && errs[0].contains("needs `{project}`"), "{errs:?}");
    let named = "ingress = { web = 80 }\npreviews = true\npreview_host = \"pr-{pr}.a.{domain}\"";
    assert_eq!(errors(&base(upstreams, "pull_requests = true", named)), Vec::<String>::new());
    let errs = errors(&base(upstreams, "pull_requests = true", "ingress = { web = 80 }\nmax_previews = 3"));
    assert!(errs.len() == 1 && errs[0].contains("need `previews = true`"), "{errs:?}");
    let errs =
        errors(&base(upstreams, "pull_requests = true", "ingress = { web = 80 }\npreviews = true\nmax_previews = 0"));
    assert!(errs.len() == 1 && errs[0].contains("at least 1"), "{errs:?}");
}
