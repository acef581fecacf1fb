//! Docker naming rules and argv builders, and parsers for docker's output: pure, no IO. The
//! [`client`] runs the docker CLI as pipe does.
//!
//! Tags. The default branch is `latest`; a pull request is `pr-<n>`; every image also gets the
//! 12-character commit id, the immutable tag rollback uses. Any other branch keeps its name
//! when that is already a valid tag that cannot be mistaken for one of those or for another
//! branch's hashed tag. Otherwise every character outside `[A-Za-z0-9_.-]` becomes `-`, the
//! result is cut to fit, and `-` plus the first 8 hex digits of the SHA-256 of the branch name
//! is appended, so `feat/a` and `feat-a` never share a tag and the same branch always gets the
//! same one.

use std::ffi::OsString;
use std::path::Path;

use sha2::{Digest, Sha256};

pub(crate) mod client;

/// Docker's limit on tag length.
const MAX_TAG: usize = 128;

/// The length of the commit-id tag.
pub(crate) const SHORT_COMMIT: usize = 12;

/// The immutable tag of a commit.
pub(crate) fn commit_tag(sha: &str) -> &str {
    sha.get(..SHORT_COMMIT).unwrap_or(sha)
}

/// The immutable tag of a commit built as an untrusted ref (a pull request, a branch outside
/// `trusted_branches`): never the trusted build's tag, so an untrusted build of the same commit
/// can never be pushed or deployed in its place.
pub(crate) fn untrusted_commit_tag(sha: &str) -> String {
    format!("{}-untrusted", commit_tag(sha))
}

/// Where every untrusted ref's build goes: a namespace of pipe's own, named after the project
/// (never after what the repository says), that nothing trusted resolves. A pipeline file or
/// repository naming an image under it is refused.
pub(crate) const UNTRUSTED_NAMESPACE: &str = "pipe-untrusted/";

/// The image name of an untrusted ref's build of `project`.
pub(crate) fn untrusted_image(project: &str) -> String {
    let name = format!("{UNTRUSTED_NAMESPACE}{project}");
    if validate_repository(&name).is_ok() {
        return name;
    }
    // A project name Docker would not take as a path component (`app-`, `a__-b`): hashed one
    // level deeper, where no project name (one component) can land.
    let digest = Sha256::digest(project.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("{UNTRUSTED_NAMESPACE}x/{hex}")
}

/// Whether an image name lies in the untrusted builds' namespace (on any registry host).
pub(crate) fn in_untrusted_namespace(image: &str) -> bool {
    let path = match image.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => image,
    };
    path.starts_with(UNTRUSTED_NAMESPACE)
}

/// The moving tag of a ref: `latest`, `pr-<n>` or the branch made a valid, distinct tag.
pub(crate) fn ref_tag(refname: &str, default_branch: Option<&str>) -> String {
    if let Some(branch) = refname.strip_prefix("refs/heads/") {
        if Some(branch) == default_branch {
            return "latest".into();
        }
        return branch_tag(branch);
    }
    for prefix in ["refs/pull/", "refs/merge-requests/"] {
        if let Some(n) = refname.strip_prefix(prefix).and_then(|r| r.strip_suffix("/head")) {
            return format!("pr-{n}");
        }
    }
    branch_tag(refname)
}

/// A branch name as a Docker tag (see the module docs).
pub(crate) fn branch_tag(branch: &str) -> String {
    let valid_chars = branch.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let valid_start = branch.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid_chars && valid_start && branch.len() <= MAX_TAG && !reserved(branch) {
        return branch.to_string();
    }
    let hash = Sha256::digest(branch.as_bytes());
    let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut clean: String =
        branch.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect();
    clean = clean.trim_start_matches(['-', '.']).to_string();
    clean.truncate(MAX_TAG - suffix.len() - 1);
    let clean = clean.trim_end_matches(['-', '.']);
    if clean.is_empty() { format!("branch-{suffix}") } else { format!("{clean}-{suffix}") }
}

/// Branch names that would read as one of pipe's own tags: `latest`, `pr-N`, a commit id (or an
/// untrusted build's `<commit id>-untrusted`), or
/// the sanitised form of another branch (`…-` and 8 hex digits), which a branch named exactly
/// like that would otherwise share (found by `prop_a_branch_named_like_another_branchs_tag_gets_its_own`).
fn reserved(branch: &str) -> bool {
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let hashed_form = branch.len() > 9
        && branch.as_bytes()[branch.len() - 9] == b'-'
        && branch[branch.len() - 8..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    branch == "latest"
        || branch.strip_prefix("pr-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        || (branch.len() >= 7 && branch.len() <= 40 && is_hex(branch))
        || branch.strip_suffix("-untrusted").is_some_and(|h| h.len() >= 7 && h.len() <= 40 && is_hex(h))
        || hashed_form
}

/// Checks an image repository name against Docker's grammar: lowercase path components of
/// `[a-z0-9]` separated by `.`, `_`, `__` or runs of `-`, joined by `/`, at most 255 characters.
/// An optional registry host (with a `.` or `:` in it, or `localhost`) may lead.
pub(crate) fn validate_repository(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("invalid image name `{name}`: expected 1 to 255 characters"));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        parts.remove(0);
    }
    for part in parts {
        if !valid_component(part) {
            return Err(format!(
                "invalid image name `{name}`: `{part}` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

fn valid_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Which builder runs `docker build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builder {
    /// BuildKit through the buildx plugin: `docker buildx build --load`.
    Buildx,
    /// The BuildKit a docker CLI before 23 carries inside it: `DOCKER_BUILDKIT=1 docker build`
    /// (Debian 12's `docker.io` 20.10).
    BuildKit,
    /// The legacy builder: `DOCKER_BUILDKIT=0 docker build`.
    Legacy,
}

impl Builder {
    /// Whether the builder mounts a secret for one step instead of leaving it in the image.
    pub(crate) fn mounts_secrets(self) -> bool {
        self != Builder::Legacy
    }

    /// Whether `RUN` steps can join a network pipe created (BuildKit takes only the engine's
    /// default, `none` or `host`).
    pub(crate) fn joins_networks(self) -> bool {
        self == Builder::Legacy
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Builder::Buildx => "BuildKit (buildx)",
            Builder::BuildKit => "BuildKit (built into the docker CLI)",
            Builder::Legacy => "the legacy builder",
        }
    }
}

/// What this host's docker CLI can build with, besides the legacy builder it always has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Builders {
    pub buildx: bool,
    pub builtin: bool,
    /// `PIPE_BUILDER=legacy|buildkit`: the operator's choice, never overridden.
    pub forced: Option<bool>,
}

/// What a build needs of its builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Needs<'a> {
    /// The first secret build arg, by name: only a builder that mounts secrets may run it.
    pub secret: Option<&'a str>,
    /// The build's `RUN` steps join a network pipe creates (an isolated build).
    pub network: bool,
}

impl Builders {
    /// BuildKit where the host has it, the legacy builder for a build that joins a network
    /// pipe made; a build neither can run as asked is refused with why (never run wider).
    pub(crate) fn choose(&self, needs: Needs<'_>) -> Result<Builder, String> {
        let kit = if self.buildx { Some(Builder::Buildx) } else { self.builtin.then_some(Builder::BuildKit) };
        let builder = match self.forced {
            Some(false) => Builder::Legacy,
            Some(true) => kit.unwrap_or(Builder::Buildx),
            None if needs.network && needs.secret.is_none() => Builder::Legacy,
            None => kit.unwrap_or(Builder::Legacy),
        };
        if let Some(key) = needs.secret
            && !builder.mounts_secrets()
        {
            return Err(format!(
                "the secret build arg `{key}` would be written into the image by {}: its history and config \
                 keep every build arg in clear",
                builder.as_str()
            ));
        }
        if needs.network && !builder.joins_networks() {
            return Err(format!("{} builds only on the default network, `none` or `host`", builder.as_str()));
        }
        Ok(builder)
    }
}

/// Everything a `docker build` needs.
pub(crate) struct BuildSpec<'a> {
    pub dockerfile: &'a Path,
    pub context: &'a Path,
    pub tags: &'a [String],
    pub labels: &'a [(String, String)],
    pub build_args: &'a [(String, String)],
    /// Secret build args by name; their values are in the docker CLI's environment, never in
    /// argv. BuildKit gets them as `--secret id=NAME,env=NAME` (read with
    /// `RUN --mount=type=secret,id=NAME`); the legacy builder never gets them
    /// ([`Builders::choose`] refuses it), since a build arg stays in the image's history.
    pub secret_args: &'a [String],
    pub iidfile: &'a Path,
    /// `--network` of the `RUN` steps; `None` for the engine's default.
    pub network: Option<&'a str>,
    /// What the build reuses of earlier builds, and what it leaves for later ones.
    pub cache: &'a CacheUse,
}

/// How a build reuses earlier builds beyond the engine's own cache (the engine's
/// `engine::build_cache` decides; only a trusted ref's build ever gets any of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CacheUse {
    /// `--cache-from` images: BuildKit reads their cache metadata from the registry; the legacy
    /// builder needs them pulled, and then reuses only layers of these images.
    pub from: Vec<String>,
    /// BuildKit writes its cache metadata into the image (`BUILDKIT_INLINE_CACHE=1`), so the
    /// pushed image is a cache source for a fresh host.
    pub inline: bool,
    /// `--no-cache`: a legacy build with no trusted image to reuse does not fall back to the
    /// engine's whole layer cache, which untrusted builds write too.
    pub no_cache: bool,
}

/// The cache flags of a build, in argv order; the legacy builder never gets BuildKit's.
pub(crate) fn cache_args(builder: Builder, cache: &CacheUse) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    if cache.no_cache {
        argv.push("--no-cache".into());
    }
    for image in &cache.from {
        argv.push("--cache-from".into());
        argv.push(image.into());
    }
    if cache.inline && builder != Builder::Legacy {
        argv.push("--build-arg".into());
        argv.push("BUILDKIT_INLINE_CACHE=1".into());
    }
    argv
}

/// `docker build` (legacy or the CLI's BuildKit) or `docker buildx build --load` arguments,
/// after the docker program itself. BuildKit-only flags (`--progress`, `--load`, `--secret`)
/// go only to BuildKit.
pub(crate) fn build_args(builder: Builder, spec: &BuildSpec<'_>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = match builder {
        Builder::Buildx => vec!["buildx".into(), "build".into(), "--load".into(), "--progress=plain".into()],
        Builder::BuildKit => vec!["build".into(), "--progress=plain".into()],
        // `--force-rm`: the container of a failed step is removed too. Left behind, it would
        // carry the labels the Dockerfile gave it so far (a compose project's, say) and be
        // adopted by that project's next `compose up`, volumes and all.
        Builder::Legacy => vec!["build".into(), "--force-rm".into()],
    };
    argv.push("--file".into());
    argv.push(spec.dockerfile.into());
    argv.push("--iidfile".into());
    argv.push(spec.iidfile.into());
    for tag in spec.tags {
        argv.push("--tag".into());
        argv.push(tag.into());
    }
    for (k, v) in spec.labels {
        argv.push("--label".into());
        argv.push(format!("{k}={v}").into());
    }
    for (k, v) in spec.build_args {
        argv.push("--build-arg".into());
        argv.push(format!("{k}={v}").into());
    }
    // Never as `--build-arg`: the legacy builder is refused a build with secrets.
    if builder.mounts_secrets() {
        for name in spec.secret_args {
            argv.push("--secret".into());
            argv.push(format!("id={name},env={name}").into());
        }
    }
    if let Some(network) = spec.network {
        argv.push("--network".into());
        argv.push(network.into());
    }
    argv.extend(cache_args(builder, spec.cache));
    argv.push(spec.context.into());
    argv
}

/// A short progress message from a build output line: `Step 3/7 : RUN make` (legacy) or
/// `#5 [2/4] RUN make` (BuildKit).
pub(crate) fn build_step(line: &str) -> Option<&str> {
    if line.starts_with("Step ") {
        return Some(line);
    }
    if line.starts_with('#') && line.contains(" [") {
        return line.split_once(' ').map(|(_, rest)| rest);
    }
    None
}

/// How a test container and each test service are confined: no capabilities, no new
/// privileges, no host path, bounded memory, PIDs and CPU, and a network of their own with no
/// route out unless `egress`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Confinement {
    /// Memory and memory+swap limit, in docker's notation (`512m`, `2g`).
    pub memory: String,
    pub pids: u32,
    pub cpus: f64,
    /// The test network reaches beyond itself (downloads); otherwise it is `--internal`.
    pub egress: bool,
}

impl Default for Confinement {
    fn default() -> Self {
        Confinement { memory: "2g".into(), pids: 1024, cpus: 2.0, egress: false }
    }
}

impl Confinement {
    /// The `docker run` flags of this confinement.
    pub(crate) fn run_flags(&self) -> Vec<OsString> {
        let cpus = format!("{}", self.cpus);
        [
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            &self.memory,
            "--memory-swap",
            &self.memory,
            "--pids-limit",
            &self.pids.to_string(),
            "--cpus",
            &cpus,
        ]
        .iter()
        .map(OsString::from)
        .collect()
    }
}

/// Everything a test `docker run` needs.
pub(crate) struct RunSpec<'a> {
    pub name: &'a str,
    pub labels: &'a [(String, String)],
    pub env: &'a [(String, String)],
    /// Secret variables by name; their values are in the docker CLI's environment.
    pub secret_env: &'a [String],
    pub confinement: &'a Confinement,
    pub network: Option<&'a str>,
    pub image: &'a str,
    pub command: &'a str,
}

/// `docker run --rm --init <confinement> …IMAGE sh -c COMMAND`: the test command is one argv
/// word, so the host never interprets it; the container's shell does.
pub(crate) fn run_args(spec: &RunSpec<'_>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["run".into(), "--rm".into(), "--init".into(), "--name".into(), spec.name.into()];
    argv.extend(spec.confinement.run_flags());
    for (k, v) in spec.labels {
        argv.push("--label".into());
        argv.push(format!("{k}={v}").into());
    }
    for (k, v) in spec.env {
        argv.push("--env".into());
        argv.push(format!("{k}={v}").into());
    }
    for name in spec.secret_env {
        argv.push("--env".into());
        argv.push(name.into());
    }
    if let Some(network) = spec.network {
        argv.push("--network".into());
        argv.push(network.into());
    }
    argv.extend([spec.image.into(), "sh".into(), "-c".into(), spec.command.into()]);
    argv
}

/// The digest in `docker push` output: `<tag>: digest: sha256:… size: N`.
pub(crate) fn push_digest(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let rest = line.split("digest: ").nth(1)?;
        let digest = rest.split_whitespace().next()?;
        digest.starts_with("sha256:").then(|| digest.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_branch_is_latest_and_prs_are_numbered() {
        assert_eq!(ref_tag("refs/heads/main", Some("main")), "latest");
        assert_eq!(ref_tag("refs/heads/dev", Some("main")), "dev");
        assert_eq!(ref_tag("refs/pull/12/head", Some("main")), "pr-12");
        assert_eq!(ref_tag("refs/merge-requests/3/head", None), "pr-3");
    }

    #[test]
    fn branch_tags_are_valid_distinct_and_deterministic() {
        let names = [
            "feat/a",
            "feat-a",
            "Feature/Login",
            "x$(touch${IFS}pwned)",
            "ünïcødé",
            "-leading",
            ".dot",
            "latest",
            "pr-5",
            "deadbeefcafe",
            &"a".repeat(250),
            &format!("{}b", "a".repeat(249)),
        ];
        let tags: Vec<String> = names.iter().map(|n| branch_tag(n)).collect();
        for (name, tag) in names.iter().zip(&tags) {
            assert!(tag.len() <= 128, "{tag}");
            assert!(tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)), "{name} -> {tag}");
            assert!(tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_'), "{name} -> {tag}");
            assert_eq!(&branch_tag(name), tag, "deterministic");
        }
        let unique: std::collections::BTreeSet<_> = tags.iter().collect();
        assert_eq!(unique.len(), tags.len(), "{tags:#?}");
        assert_eq!(tags[1], "feat-a", "a valid tag is kept as is");
        assert!(tags[0].starts_with("feat-a-"), "{}", tags[0]);
        assert!(tags[7].starts_with("latest-") && tags[8].starts_with("pr-5-") && tags[9].starts_with("deadbeefcafe-"));
    }

    #[test]
    fn untrusted_builds_have_a_namespace_of_their_own_named_after_the_project() {
        assert_eq!(untrusted_image("app"), "pipe-untrusted/app");
        // A project name Docker refuses as a path component is hashed, still in the namespace.
        let odd = untrusted_image("app-");
        assert!(odd.starts_with("pipe-untrusted/x/") && validate_repository(&odd).is_ok(), "{odd}");
        for name in ["pipe-untrusted/app", "registry.example.com/pipe-untrusted/x", "localhost/pipe-untrusted/y"] {
            assert!(in_untrusted_namespace(name), "{name}");
        }
        for name in ["app", "pipe-untrusted-app", "team/pipe-untrusted/x", "pipe-untrustedx/y"] {
            assert!(!in_untrusted_namespace(name), "{name}");
        }
    }

    #[test]
    fn repository_names_follow_the_grammar() {
        for ok in ["app", "example/project1", "a.b_c__d---e/f", "127.0.0.1:5000/team/app", "localhost/x"] {
            assert!(validate_repository(ok).is_ok(), "{ok}");
        }
        for bad in ["", "App", "app/", "-app", "a..b", "a___b", "team/App", "a b"] {
            assert!(validate_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_builder_never_gets_buildkit_flags() {
        let tags = vec!["app:dev".to_string(), "app:0123456789ab".to_string()];
        let labels = vec![("org.opencontainers.image.revision".to_string(), "abc".to_string())];
        let args = vec![("V".to_string(), "1".to_string())];
        let spec = BuildSpec {
            dockerfile: Path::new("/w/Dockerfile"),
            context: Path::new("/w"),
            tags: &tags,
            labels: &labels,
            build_args: &args,
            secret_args: &["NPM_TOKEN".to_string()],
            iidfile: Path::new("/tmp/iid"),
            network: None,
            cache: &CacheUse::default(),
        };
        let legacy: Vec<String> =
            build_args(Builder::Legacy, &spec).iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            legacy.join(" "),
            "build --force-rm --file /w/Dockerfile --iidfile /tmp/iid --tag app:dev --tag app:0123456789ab \
             --label org.opencontainers.image.revision=abc --build-arg V=1 /w"
        );
        let buildx: Vec<String> =
            build_args(Builder::Buildx, &spec).iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(&buildx[..4], ["buildx", "build", "--load", "--progress=plain"]);
        assert!(buildx.join(" ").contains("--secret id=NPM_TOKEN,env=NPM_TOKEN /w"), "{buildx:?}");
        let builtin: Vec<String> =
            build_args(Builder::BuildKit, &spec).iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(&builtin[..2], ["build", "--progress=plain"]);
        assert!(builtin.join(" ").contains("--secret id=NPM_TOKEN,env=NPM_TOKEN /w"), "{builtin:?}");
    }

    #[test]
    fn cache_flags_come_before_the_context_and_inline_cache_only_to_buildkit() {
        let cache = CacheUse {
            from: vec!["reg.example.com/app:dev".into(), "reg.example.com/app:latest".into()],
            inline: true,
            no_cache: false,
        };
        let spec = BuildSpec {
            dockerfile: Path::new("/w/Dockerfile"),
            context: Path::new("/w"),
            tags: &["app:dev".to_string()],
            labels: &[],
            build_args: &[],
            secret_args: &[],
            iidfile: Path::new("/tmp/iid"),
            network: None,
            cache: &cache,
        };
        let line =
            |b| build_args(b, &spec).iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        assert_eq!(
            line(Builder::BuildKit),
            "build --progress=plain --file /w/Dockerfile --iidfile /tmp/iid --tag app:dev \
             --cache-from reg.example.com/app:dev --cache-from reg.example.com/app:latest \
             --build-arg BUILDKIT_INLINE_CACHE=1 /w"
        );
        assert!(line(Builder::Buildx).ends_with("--build-arg BUILDKIT_INLINE_CACHE=1 /w"));
        assert_eq!(
            line(Builder::Legacy),
            "build --force-rm --file /w/Dockerfile --iidfile /tmp/iid --tag app:dev \
             --cache-from reg.example.com/app:dev --cache-from reg.example.com/app:latest /w"
        );
        let cold = CacheUse { no_cache: true, ..CacheUse::default() };
        assert_eq!(cache_args(Builder::Legacy, &cold), [OsString::from("--no-cache")]);
        assert!(cache_args(Builder::BuildKit, &CacheUse::default()).is_empty());
    }

    #[test]
    fn a_secret_build_arg_never_goes_to_a_builder_that_would_keep_it_in_the_image() {
        let secret = Needs { secret: Some("NPM_TOKEN"), network: false };
        let isolated = Needs { secret: None, network: true };
        let legacy_only = Builders::default();
        let err = legacy_only.choose(secret).unwrap_err();
        assert!(err.contains("`NPM_TOKEN`") && err.contains("legacy builder"), "{err}");
        let forced_legacy = Builders { buildx: true, builtin: true, forced: Some(false) };
        assert!(forced_legacy.choose(secret).is_err());
        let builtin = Builders { builtin: true, ..Builders::default() };
        assert_eq!(builtin.choose(secret), Ok(Builder::BuildKit));
        assert_eq!(builtin.choose(Needs::default()), Ok(Builder::BuildKit));
        let both = Builders { buildx: true, builtin: true, forced: None };
        assert_eq!(both.choose(secret), Ok(Builder::Buildx));
        // An isolated build takes the builder that can join pipe's network; forced to
        // BuildKit, it is refused rather than run on the default network.
        assert_eq!(both.choose(isolated), Ok(Builder::Legacy));
        let forced_kit = Builders { forced: Some(true), ..both };
        assert!(forced_kit.choose(isolated).unwrap_err().contains("default network"));
        // Secrets and an isolated network at once: no builder gives both.
        assert!(both.choose(Needs { secret: Some("K"), network: true }).is_err());
    }

    #[test]
    fn test_command_is_one_word_for_the_container_shell() {
        let spec = RunSpec {
            name: "pipe-test-1",
            labels: &[("pipe.run".into(), "1".into())],
            env: &[("A".into(), "1".into())],
            secret_env: &["DB_PASSWORD".into()],
            confinement: &Confinement::default(),
            network: Some("pipe-net"),
            image: "app:abc",
            command: "make test && echo $(whoami)",
        };
        let argv: Vec<String> = run_args(&spec).iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(argv.last().unwrap(), "make test && echo $(whoami)");
        assert_eq!(&argv[..3], ["run", "--rm", "--init"]);
        let line = argv.join(" ");
        assert!(
            line.contains(
                "--cap-drop ALL --security-opt no-new-privileges --memory 2g --memory-swap 2g --pids-limit 1024 --cpus 2"
            ),
            "{line}"
        );
        assert!(line.contains("--env A=1 --env DB_PASSWORD --network pipe-net"), "{line}");
        assert!(!line.contains("--privileged") && !line.contains("--volume") && !line.contains("-v "), "{line}");
    }

    #[test]
    fn push_digest_is_parsed() {
        let out = "The push refers to repository [127.0.0.1:5000/app]\n5f70bf18a086: Pushed\ndev: digest: sha256:0123abcd size: 527\n";
        assert_eq!(push_digest(out).as_deref(), Some("sha256:0123abcd"));
        assert_eq!(push_digest("nothing here"), None);
    }

    #[test]
    fn build_steps_are_recognised() {
        assert_eq!(build_step("Step 2/5 : RUN make"), Some("Step 2/5 : RUN make"));
        assert_eq!(build_step("#7 [2/4] RUN make"), Some("[2/4] RUN make"));
        assert_eq!(build_step(" ---> Running in 1234"), None);
    }

    #[test]
    fn a_branch_named_after_another_branchs_tag_does_not_share_it() {
        // Found by the property below: `feat-a-<hash of feat/a>` used to be kept as it was.
        let tag = branch_tag("feat/a");
        assert_ne!(branch_tag(&tag), tag);
        assert_eq!(branch_tag("release-2026"), "release-2026", "ordinary names are still kept");
    }

    #[test]
    fn a_branch_named_like_an_untrusted_builds_tag_does_not_take_it() {
        let untrusted = untrusted_commit_tag("0123456789abcdef0123456789abcdef01234567");
        assert_eq!(untrusted, "0123456789ab-untrusted");
        assert_ne!(branch_tag(&untrusted), untrusted);
        assert_eq!(branch_tag("tests-untrusted"), "tests-untrusted", "ordinary names are still kept");
    }

    // Property tests (`prop_*`): `bench/run.sh` runs them with many more cases.
    fn valid_tag(tag: &str) -> bool {
        tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    proptest::proptest! {
        #[test]
        fn prop_any_branch_name_becomes_a_valid_deterministic_tag(name in "\\PC{1,300}") {
            let tag = branch_tag(&name);
            proptest::prop_assert!(valid_tag(&tag), "{name:?} -> {tag:?}");
            proptest::prop_assert_eq!(&tag, &branch_tag(&name));
            proptest::prop_assert!(!reserved(&tag) || tag != name);
        }

        #[test]
        fn prop_distinct_names_get_distinct_tags(a in "[a-zA-Z0-9/_.-]{1,40}", b in "[a-zA-Z0-9/_.-]{1,40}") {
            proptest::prop_assume!(a != b);
            proptest::prop_assert_ne!(branch_tag(&a), branch_tag(&b), "{:?} and {:?}", a, b);
        }

        #[test]
        fn prop_a_branch_named_like_another_branchs_tag_gets_its_own(name in "[a-zA-Z0-9_.-]{0,20}/[a-zA-Z0-9/_.-]{0,40}") {
            // A branch literally named after another branch's sanitised tag must not share it.
            let tag = branch_tag(&name);
            proptest::prop_assert_ne!(branch_tag(&tag), tag);
        }

        #[test]
        fn prop_pull_requests_are_pr_n(n in 1u32..1_000_000) {
            proptest::prop_assert_eq!(ref_tag(&format!("refs/pull/{n}/head"), Some("main")), format!("pr-{n}"));
        }
    }
}
