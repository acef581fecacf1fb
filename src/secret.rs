//! Secrets resolved from `*_env` / `*_file` indirection, or from a command's output (a password
//! manager or secrets store, run through `exec` once per process). The value never prints:
//! `Debug` and `Display` show `***`, and error messages name the variable, file or command,
//! never the content.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SecretRef;
use crate::error::Interrupted;
use crate::exec::{self, Cmd};
use crate::output::Output;

/// A secret value; reveal it only where it is handed to git, docker's stdin or an HTTP header.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn reveal(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the secret now; `what` names the config key for the error message. A command is run
/// quietly; [`resolve_logged`] shows it at `-v`.
pub(crate) fn resolve(secret: &SecretRef, what: &str) -> anyhow::Result<Secret> {
    resolve_logged(&Output::new(true, 0), secret, what)
}

/// [`resolve`], with a secret command's argv shown at `-v` like every command pipe runs.
pub(crate) fn resolve_logged(out: &Output, secret: &SecretRef, what: &str) -> anyhow::Result<Secret> {
    let value = match secret {
        SecretRef::Env(var) => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => bail!("environment variable `{var}` (named by `{what}_env`) is not set"),
        },
        SecretRef::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("failed to read secret file `{}` (named by `{what}_file`)", path.display()))?,
        SecretRef::Command { argv, timeout } => return from_command(out, argv, *timeout, what, true),
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        bail!("the secret for `{what}` is empty");
    }
    Ok(Secret(value))
}

/// What a secret command answered: the value, or the error message (never holding the value).
type Answer = Result<Secret, String>;

/// Each argv's answer, filled once.
type Answers = Mutex<HashMap<Vec<String>, Arc<OnceLock<Answer>>>>;

/// Secret commands already run by this process, by argv: each runs at most once, however many
/// stages, targets and projects (in parallel) use it, and a failure is not retried either.
fn answers() -> &'static Answers {
    static ANSWERS: OnceLock<Answers> = OnceLock::new();
    ANSWERS.get_or_init(Default::default)
}

/// Runs `argv` (no shell) through `exec` under `timeout` and takes its stdout, trailing newline
/// trimmed, as the secret; with `cached`, at most once per process for each argv. Every error
/// names the key and the command, never a value.
pub(crate) fn from_command(
    out: &Output,
    argv: &[String],
    timeout: Duration,
    what: &str,
    cached: bool,
) -> anyhow::Result<Secret> {
    let answer = if cached {
        let slot = {
            let mut answers = answers().lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(answers.entry(argv.to_vec()).or_default())
        };
        // Another thread asking for the same argv waits here for the one run.
        let mut interrupted = None;
        let answer = slot.get_or_init(|| match run_command(out, argv, timeout) {
            Err(Failure::Interrupted(e)) => {
                interrupted = Some(e);
                Err(String::new())
            }
            other => other.map_err(|f| f.message()),
        });
        if let Some(e) = interrupted {
            // Not an answer: the next process asks again.
            return Err(e);
        }
        if answer.as_ref().is_err_and(String::is_empty) {
            // The run another thread waited on was interrupted: so is this one.
            crate::signals::check()?;
        }
        answer.clone()
    } else {
        match run_command(out, argv, timeout) {
            Err(Failure::Interrupted(e)) => return Err(e),
            other => other.map_err(|f| f.message()),
        }
    };
    answer.map_err(|why| {
        let shown = Cmd::from_argv(&argv.iter().map(OsString::from).collect::<Vec<_>>());
        anyhow!("the secret for `{what}`: `{shown}` {why}")
    })
}

/// Whether a secret command's program can be found (`pipe check`, which never runs it).
pub(crate) fn command_found(argv: &[String]) -> bool {
    argv.first().is_some_and(|p| exec::available(p.as_ref()))
}

/// Why a secret command gave no secret.
enum Failure {
    Interrupted(anyhow::Error),
    Failed(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Interrupted(e) => format!("{e:#}"),
            Failure::Failed(why) => why,
        }
    }
}

fn run_command(out: &Output, argv: &[String], timeout: Duration) -> Result<Secret, Failure> {
    let cmd = Cmd::from_argv(&argv.iter().map(OsString::from).collect::<Vec<_>>());
    let (stdout, failed) = match exec::capture_even_failed(out, &cmd, timeout) {
        Ok(answer) => answer,
        Err(e) if e.is::<Interrupted>() => return Err(Failure::Interrupted(e)),
        Err(e) => return Err(Failure::Failed(format!("could not run: {e:#}"))),
    };
    if let Some(failed) = failed {
        // stderr only: stdout may hold a value even when the command failed.
        let tail = crate::output::tail_lines(&failed.output_tail, 5);
        let tail = if tail.trim().is_empty() { String::new() } else { format!("\n--- stderr\n{}", tail.trim_end()) };
        return Err(Failure::Failed(format!("failed ({}){tail}", failed.status)));
    }
    let value = stdout.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(Failure::Failed("printed nothing: an empty secret is never used".into()));
    }
    Ok(Secret(value.to_string()))
}

/// The innermost cause of an HTTP error, without the URL reqwest puts in its own message (a
/// Slack URL or a docker-puller URL is a secret).
pub(crate) fn http_cause(err: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(inner) = source.source() {
        source = inner;
    }
    if err.is_timeout() { format!("timed out ({source})") } else { source.to_string() }
}

/// `sha256=<hex>` of HMAC-SHA256 over the body.
pub(crate) fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Whether `given` is the `sha256=<hex>` signature of `body`, compared in constant time.
pub(crate) fn verify(secret: &[u8], body: &[u8], given: &str) -> bool {
    same(sign(secret, body).as_bytes(), given.as_bytes())
}

/// A secret of its own for `label`, derived from `key`: the hex HMAC-SHA256 of `label` keyed
/// with `key` (as `openssl dgst -sha256 -hmac KEY` prints it). Knowing one label's secret
/// tells nothing of another's or of the key.
pub(crate) fn derive(key: &Secret, label: &str) -> Secret {
    Secret(sign(key.0.as_bytes(), label.as_bytes()).trim_start_matches("sha256=").to_string())
}

/// A random secret nobody knows: what an unknown hook is checked against, so it costs the same
/// work as a known one.
pub(crate) fn random() -> Secret {
    Secret(random_id())
}

/// 128 random bits as 32 hex digits (run ids, delivery ids).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom(2) writes at most `bytes.len()` bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // No entropy to be had: time and pid still make an id unique enough for a delivery id.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes[..16].copy_from_slice(&(nanos ^ u128::from(std::process::id())).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in constant time (over their SHA-256 digests, so lengths leak nothing).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_and_ids() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn secrets_never_format() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn signature_matches_github_format() {
        // HMAC-SHA256("It's a Secret to Everybody", "Hello, World!") as documented by GitHub.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), expected);
        assert!(verify(b"It's a Secret to Everybody", b"Hello, World!", expected));
        assert!(!verify(b"It's a Secret to Everybody", b"Hello, World?", expected));
    }

    #[test]
    fn a_secret_command_runs_once_per_argv_and_its_errors_never_hold_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let script = format!("echo run >> '{}'; printf 'cmd-s3cret\\n'", calls.display());
        let argv = vec!["sh".to_string(), "-c".to_string(), script];
        let out = Output::new(true, 0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let argv = argv.clone();
                std::thread::spawn(move || from_command(&out, &argv, Duration::from_secs(10), "k", true).unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().reveal(), "cmd-s3cret");
        }
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "run\n", "four users, one run");
        // Uncached (`pipe serve`): asked again.
        from_command(&out, &argv, Duration::from_secs(10), "k", false).unwrap();
        assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 2);

        let failing = vec!["sh".to_string(), "-c".to_string(), "echo leaked-value; echo nope >&2; exit 2".to_string()];
        let err = from_command(&out, &failing, Duration::from_secs(10), "project.a.env.K", true).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("the secret for `project.a.env.K`: `sh -c"), "{text}");
        assert!(
            text.contains("failed (exit status: 2)") && text.contains("nope") && !text.contains("leaked-value\n"),
            "{text}"
        );
        let empty = vec!["true".to_string()];
        let err = from_command(&out, &empty, Duration::from_secs(10), "k", true).unwrap_err();
        assert!(format!("{err:#}").ends_with("`true` printed nothing: an empty secret is never used"), "{err:#}");
    }

    #[test]
    fn missing_variable_names_the_key_not_a_value() {
        let err = resolve(&SecretRef::Env("PIPE_TEST_SURELY_UNSET_VAR".into()), "registry.r.password").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable `PIPE_TEST_SURELY_UNSET_VAR` (named by `registry.r.password_env`) is not set"
        );
    }
}
