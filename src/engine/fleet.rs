//! A deploy that spans hosts: one release to every host of a webhook target's `hosts`, as one.
//! Each host runs `pipe serve`, which deploys and checks the release its own way; this room
//! decides the order and the outcome. Every host must answer before any is asked to switch; the
//! hosts go in batches of `batch`; when any host fails, every host that was asked gets the
//! previous release back, and the deploy is recorded as rolled back with each host's result and
//! the failing host's own answer. One lock per target, held from the check to the last rollback.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::Job;
use crate::config::{Deploy, WebhookTarget};
use crate::error::{Interrupted, StageFailed};
use crate::model::{DeployResult, HostResult, Outcome, Stage};
use crate::state::{self, DeployRecord, HostRecord, Timeline};
use crate::targets::rollout::Shipment;
use crate::targets::webhook::{self, Delivery};

/// How long a host has to answer `GET /healthz` before the rollout.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The deploy's moments: the commit's stages from its run, then every host serving it (`done`).
fn timeline(release: &Shipment, done: jiff::Timestamp) -> Timeline {
    let ended = |stage: Stage| {
        let s = release.stages.iter().rev().find(|s| s.stage == stage && s.result == Outcome::Passed)?;
        s.ended.or_else(|| s.started.checked_add(jiff::SignedDuration::from_secs_f64(s.seconds)).ok())
    };
    Timeline {
        detected: release.detected,
        built: ended(Stage::Build),
        tested: ended(Stage::Test),
        pushed: ended(Stage::Push),
        healthy: Some(done),
        traffic: Some(done),
    }
}

/// Deploys `release` to every host of `hook`, rolling back every host asked when any fails;
/// records the deploy (with each host's result) in the target's history.
pub(crate) fn rollout(
    job: &Job<'_>,
    target: &Deploy,
    hook: &WebhookTarget,
    release: &Shipment,
    timeout: Duration,
) -> anyhow::Result<Timeline> {
    let (out, project, name) = (&job.out, job.name, target.display_name());
    let path = state::deploys_path(job.state_path, project, name);
    let _lock = lock(&path, name)?;
    let mut history = state::load_deploys(&path)?;
    let (image, tag) = (release.image.as_str(), release.tag.as_str());
    let hosts = &hook.hosts;
    let n = hosts.len();
    out.info(format!("{project}: deploying {image}:{tag} to `{name}`: {n} hosts, {} at a time", hook.batch_size()));
    let mut record = DeployRecord {
        commit: release.commit.to_string(),
        image: image.to_string(),
        tag: tag.to_string(),
        refname: job.refname.clone(),
        at: crate::clock::precise(),
        result: DeployResult::Failed,
        timeline: None,
        rollback: release.rollback,
        images: release.images.clone(),
        hosts: hosts.iter().map(|h| host_record(h, HostResult::NotStarted, None)).collect(),
    };

    // Every host answers before any switches.
    let reach = in_parallel(hosts.iter().map(|h| webhook::host_url(hook, h)).collect(), |url| {
        webhook::reachable(url, REACH_TIMEOUT)
    });
    crate::signals::check()?;
    let unreachable: Vec<usize> = (0..n).filter(|&i| reach[i].is_err()).collect();
    for &i in &unreachable {
        let why = reach[i].as_ref().err().cloned().unwrap_or_default();
        let result = if hook.skip_unreachable { HostResult::Skipped } else { HostResult::Unreachable };
        record.hosts[i] = host_record(&hosts[i], result, Some(why.clone()));
        let verb = if hook.skip_unreachable { "skipped" } else { "cannot be reached" };
        out.error(format!("{project}: `{name}` host `{}` ({}/{n}) {verb}: {why}", hosts[i], i + 1));
    }
    if !unreachable.is_empty() && (!hook.skip_unreachable || unreachable.len() == n) {
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        let named: Vec<String> = unreachable
            .iter()
            .map(|&i| format!("`{}` ({})", hosts[i], reach[i].as_ref().err().cloned().unwrap_or_default()))
            .collect();
        let hint = if hook.skip_unreachable {
            "\nhint: no host could be reached; check that `pipe serve` runs on them and that this host reaches their port"
        } else {
            "\nhint: bring the host back, or set `skip_unreachable = true` on the target to deploy without it"
        };
        return Err(StageFailed(format!(
            "deploy of {image}:{tag} to `{name}` not started: {} of {n} hosts cannot be reached: {}; no host was switched{hint}",
            unreachable.len(),
            named.join(", ")
        ))
        .into());
    }
    let live: Vec<usize> = (0..n).filter(|i| !unreachable.contains(i)).collect();

    // Batch by batch; the first batch with a failure is the last.
    let images = release.release_images();
    let delivery = Delivery {
        project,
        refname: &job.refname,
        commit: &release.commit,
        image,
        tag,
        digest: release.digest.as_deref(),
        images: &images,
    };
    let mut asked = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut interrupted = None;
    for batch in live.chunks(hook.batch_size()) {
        let results = in_parallel(batch.to_vec(), |&i| {
            webhook::post_to(hook, &webhook::host_url(hook, &hosts[i]), &delivery, timeout)
        });
        for (&i, result) in batch.iter().zip(results) {
            asked.push(i);
            match result {
                Ok(()) => {
                    record.hosts[i] = host_record(&hosts[i], HostResult::Deployed, None);
                    out.info(format!(
                        "{project}: `{name}` host `{}` ({}/{n}): deployed {image}:{tag}",
                        hosts[i],
                        i + 1
                    ));
                }
                Err(err) if err.is::<Interrupted>() => interrupted = Some(err),
                Err(err) => {
                    let why = answer(&err);
                    out.error(format!("{project}: `{name}` host `{}` ({}/{n}) failed: {why}", hosts[i], i + 1));
                    record.hosts[i] = host_record(&hosts[i], HostResult::Failed, Some(why.clone()));
                    failed.push((i, why));
                }
            }
        }
        if !failed.is_empty() || interrupted.is_some() {
            break;
        }
    }
    if let Some(err) = interrupted {
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        return Err(err);
    }
    if failed.is_empty() {
        record.result = DeployResult::Succeeded;
        let timeline = timeline(release, record.at);
        record.timeline = Some(timeline.clone());
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        let skipped = if unreachable.is_empty() { String::new() } else { format!(" ({} skipped)", unreachable.len()) };
        out.info(format!("{project}: deployed {image}:{tag} to `{name}` on {} of {n} hosts{skipped}", live.len()));
        return Ok(timeline);
    }

    // A host failed: every host asked goes back to the previous release.
    let failures: Vec<String> =
        failed.iter().map(|(i, why)| format!("host `{}` ({}/{n}): {why}", hosts[*i], i + 1)).collect();
    let failure = format!("deploy of {image}:{tag} to `{name}` failed on {}", failures.join("; "));
    let previous = history
        .deploys
        .iter()
        .rev()
        .find(|d| d.result == DeployResult::Succeeded && d.commit != release.commit)
        .cloned();
    let Some(previous) = previous else {
        let left: Vec<&str> = asked
            .iter()
            .filter(|&&i| record.hosts[i].result == HostResult::Deployed)
            .map(|&i| hosts[i].as_str())
            .collect();
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        let left = if left.is_empty() { String::new() } else { format!(": {} run the new release", left.join(", ")) };
        return Err(StageFailed(format!("{failure}\nthere is no earlier deploy to roll back to{left}")).into());
    };
    let (back_image, back_tag) = (previous.image.as_str(), previous.tag.as_str());
    out.error(format!("{project}: rolling back {} hosts of `{name}` to {back_image}:{back_tag}", asked.len()));
    // The previous release whole: every image it ran, from where this target pulls them.
    let back_images = Shipment {
        tag: previous.tag.clone(),
        images: previous.images.clone(),
        pulled_from: release.pulled_from.clone(),
        ..Shipment::default()
    }
    .release_images();
    let back = Delivery {
        project,
        refname: &previous.refname,
        commit: &previous.commit,
        image: back_image,
        tag: back_tag,
        digest: None,
        images: &back_images,
    };
    // All at once: the sooner every host serves one release again, the better.
    let results =
        in_parallel(asked.clone(), |&i| webhook::post_to(hook, &webhook::host_url(hook, &hosts[i]), &back, timeout));
    let mut stuck = Vec::new();
    for (&i, result) in asked.iter().zip(results) {
        let was = record.hosts[i].clone();
        match (result, was.result) {
            (Ok(()), HostResult::Failed) => {
                out.info(format!(
                    "{project}: `{name}` host `{}` ({}/{n}): back on {back_image}:{back_tag}",
                    hosts[i],
                    i + 1
                ));
            }
            (Ok(()), _) => {
                record.hosts[i] = host_record(&hosts[i], HostResult::RolledBack, None);
                out.info(format!(
                    "{project}: `{name}` host `{}` ({}/{n}): back on {back_image}:{back_tag}",
                    hosts[i],
                    i + 1
                ));
            }
            (Err(err), _) => {
                let why = answer(&err);
                out.error(format!(
                    "{project}: `{name}` host `{}` ({}/{n}): rolling back failed: {why}",
                    hosts[i],
                    i + 1
                ));
                let detail = match was.detail {
                    Some(first) => format!("{first}; rolling back failed: {why}"),
                    None => format!("rolling back failed: {why}"),
                };
                record.hosts[i] = host_record(&hosts[i], HostResult::RollbackFailed, Some(detail));
                stuck.push(format!("`{}` ({why})", hosts[i]));
            }
        }
    }
    record.result = if stuck.is_empty() { DeployResult::RolledBack } else { DeployResult::Failed };
    let hosts_back = record.hosts.iter().map(back_record).collect();
    history.deploys.push(record);
    if stuck.is_empty() {
        history.deploys.push(DeployRecord {
            at: crate::clock::precise(),
            result: DeployResult::Succeeded,
            timeline: None,
            rollback: true,
            hosts: hosts_back,
            ..previous.clone()
        });
    }
    state::save_deploys(&path, &mut history)?;
    let rolled: Vec<&str> = asked.iter().map(|&i| hosts[i].as_str()).collect();
    let message = if stuck.is_empty() {
        format!("{failure}\nrolled back {} to {back_image}:{back_tag}: every host runs it again", rolled.join(", "))
    } else {
        format!(
            "{failure}\nrolling back to {back_image}:{back_tag} failed on {}: those hosts may run another release than the rest",
            stuck.join(", ")
        )
    };
    Err(StageFailed(message).into())
}

/// A host's line in the record that puts the previous release back: every host asked runs it
/// again, a skipped one is still skipped.
fn back_record(h: &HostRecord) -> HostRecord {
    match h.result {
        HostResult::Skipped => h.clone(),
        _ => host_record(&h.host, HostResult::Deployed, None),
    }
}

fn host_record(host: &str, result: HostResult, detail: Option<String>) -> HostRecord {
    HostRecord { host: host.to_string(), result, detail }
}

/// What a host answered, on one line: the receiver's error (its health check's last answer
/// when that is what failed), without the log tail that follows it.
fn answer(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    let first = text.lines().next().unwrap_or("").trim();
    // `the receiver's run ended `failed`: WHY` reads `run failed: WHY` beside a host's name.
    match first.strip_prefix("the receiver's run ended `").and_then(|rest| rest.split_once("`: ")) {
        Some((status, why)) => format!("run {status}: {why}"),
        None => first.to_string(),
    }
}

/// Runs `f` on every item at once, one thread each; results in the items' order.
fn in_parallel<T: Sync, R: Send>(items: Vec<T>, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(|| f(item))).collect();
        handles.into_iter().map(|h| h.join().expect("a fleet host's thread panicked")).collect()
    })
}

/// Held for a fleet's whole rollout, rollback included: `<target>.toml.lock` beside the
/// target's deploy history.
struct TargetLock(#[allow(dead_code)] File);

fn lock(history: &Path, name: &str) -> anyhow::Result<TargetLock> {
    let mut lock = history.as_os_str().to_os_string();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create directory `{}`", dir.display()))?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .with_context(|| format!("failed to open the target lock `{}`", lock.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(TargetLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow!(
            "another deploy of `{name}` is running (it holds `{}`); one deploy per target at a time",
            lock.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow!("failed to lock `{}`: {e}", lock.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receivers_answer_keeps_its_first_line_without_the_log_tail() {
        let err = anyhow!(
            "the receiver's run ended `failed`: health check `http://web/health` did not answer 2xx within 15s (last: HTTP 503)\nstep 1\nstep 2"
        );
        assert_eq!(
            answer(&err),
            "run failed: health check `http://web/health` did not answer 2xx within 15s (last: HTTP 503)"
        );
        let refused = anyhow!("webhook `http://10.0.0.7:9010/hooks/app` failed after 3 attempts: connection refused");
        assert_eq!(
            answer(&refused),
            "webhook `http://10.0.0.7:9010/hooks/app` failed after 3 attempts: connection refused"
        );
    }

    #[test]
    fn results_come_back_in_the_order_of_the_hosts() {
        let got = in_parallel(vec![3u64, 1, 2], |&d| {
            std::thread::sleep(Duration::from_millis(d * 20));
            d * 10
        });
        assert_eq!(got, vec![30, 10, 20]);
    }
}
