//! A deploy that spans hosts: one release to every host of a target's hosts, as one. The hosts
//! are reached one of two ways ([`Hosts`]): each runs `pipe serve`, which deploys and checks
//! the release its own way ([`Receivers`], a webhook target's `hosts`), or each is reached over
//! SSH and pipe runs the rollout against its engine and nginx (`fleet_ssh`). This room decides
//! the order and the outcome. Every host must answer before any is asked to switch; the hosts
//! go in batches of `batch`; when any host fails, every host that was asked gets the previous
//! release back, and the deploy is recorded as rolled back with each host's result and the
//! failing host's own answer. One lock per target, held from the check to the last rollback.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::Job;
use crate::config::WebhookTarget;
use crate::error::{Interrupted, StageFailed};
use crate::model::{DeployResult, HostResult, Outcome, Stage};
use crate::state::{self, DeployRecord, HostRecord, Timeline};
use crate::targets::rollout::Shipment;
use crate::targets::ssh::Unreached;
use crate::targets::webhook::{self, Delivery};

/// One release as it goes to one host: the new one, or the previous one put back (whole: every
/// image it ran, from where the target pulls them).
pub(crate) struct Ship<'a> {
    pub refname: &'a str,
    pub release: &'a Shipment,
}

/// How a fleet reaches its hosts.
pub(crate) trait Hosts: Sync {
    /// The hosts as the pipeline file names them, in its order.
    fn names(&self) -> &[String];
    /// How many hosts deploy at once.
    fn batch(&self) -> usize;
    /// A host that cannot be reached before the rollout is skipped instead of failing the deploy.
    fn skip_unreachable(&self) -> bool;
    /// Whether host `i` can take the release, asked of every host before any is asked to switch.
    fn reach(&self, i: usize) -> Result<(), Unreached>;
    /// Deploys `ship` to host `i`, health check included; its error is the host's answer.
    fn ship(&self, i: usize, ship: &Ship<'_>) -> anyhow::Result<()>;
}

/// Hosts that run `pipe serve`: a webhook target's `hosts`, each posted the release.
pub(crate) struct Receivers<'a> {
    pub hook: &'a WebhookTarget,
    pub project: &'a str,
    pub timeout: Duration,
}

impl Hosts for Receivers<'_> {
    fn names(&self) -> &[String] {
        &self.hook.hosts
    }

    fn batch(&self) -> usize {
        self.hook.batch_size()
    }

    fn skip_unreachable(&self) -> bool {
        self.hook.skip_unreachable
    }

    fn reach(&self, i: usize) -> Result<(), Unreached> {
        webhook::reachable(&webhook::host_url(self.hook, &self.hook.hosts[i]), REACH_TIMEOUT).map_err(Unreached::Down)
    }

    fn ship(&self, i: usize, ship: &Ship<'_>) -> anyhow::Result<()> {
        let release = ship.release;
        let images = release.release_images();
        let delivery = Delivery {
            project: self.project,
            refname: ship.refname,
            commit: &release.commit,
            image: &release.image,
            tag: &release.tag,
            digest: release.digest.as_deref(),
            images: &images,
            host: Some(&self.hook.hosts[i]),
        };
        webhook::post_to(self.hook, &webhook::host_url(self.hook, &self.hook.hosts[i]), &delivery, self.timeout)
    }
}

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

/// Deploys `release` to every one of `fleet`'s hosts, rolling back every host asked when any
/// fails; records the deploy (with each host's result) in the target `name`'s history.
pub(crate) fn rollout(job: &Job<'_>, name: &str, fleet: &dyn Hosts, release: &Shipment) -> anyhow::Result<Timeline> {
    let (out, project) = (&job.out, job.name);
    let path = state::deploys_path(job.state_path, project, name);
    let _lock = lock(&path, name)?;
    let mut history = state::load_deploys(&path)?;
    let (image, tag) = (release.image.as_str(), release.tag.as_str());
    let hosts = fleet.names();
    let n = hosts.len();
    let skip = fleet.skip_unreachable();
    out.info(format!("{project}: deploying {image}:{tag} to `{name}`: {n} hosts, {} at a time", fleet.batch()));
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
    let reach = in_parallel((0..n).collect(), |&i| fleet.reach(i));
    crate::signals::check()?;
    let unreachable: Vec<usize> = (0..n).filter(|&i| reach[i].is_err()).collect();
    let why = |i: usize| reach[i].as_ref().err().map(|u| u.why().to_string()).unwrap_or_default();
    // A host refused for its key is never skipped: something is wrong with it or in between.
    let refused: Vec<usize> = (0..n).filter(|&i| matches!(reach[i], Err(Unreached::Key(_)))).collect();
    for &i in &unreachable {
        let skipped = skip && !refused.contains(&i);
        let result = if skipped { HostResult::Skipped } else { HostResult::Unreachable };
        // The reason's first line is the host's; a hint follows in the error.
        let first = why(i).lines().next().unwrap_or("").to_string();
        record.hosts[i] = host_record(&hosts[i], result, Some(first.clone()));
        let verb = match (skipped, refused.contains(&i)) {
            (true, _) => "skipped",
            (false, true) => "refused",
            (false, false) => "cannot be reached",
        };
        out.error(format!("{project}: `{name}` host `{}` ({}/{n}) {verb}: {first}", hosts[i], i + 1));
    }
    if !unreachable.is_empty() && (!skip || unreachable.len() == n || !refused.is_empty()) {
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        let stop: Vec<usize> = if refused.is_empty() { unreachable.clone() } else { refused.clone() };
        let named: Vec<String> =
            stop.iter().map(|&i| format!("`{}` ({})", hosts[i], why(i).lines().next().unwrap_or(""))).collect();
        let hints: Vec<String> =
            stop.iter().flat_map(|&i| why(i).lines().skip(1).map(str::to_string).collect::<Vec<_>>()).collect();
        let hint = if !hints.is_empty() {
            format!("\n{}", hints.join("\n"))
        } else if skip {
            "\nhint: no host could be reached; check that this host reaches them".to_string()
        } else {
            "\nhint: bring the host back, or set `skip_unreachable = true` on the target to deploy without it"
                .to_string()
        };
        let unreachable = stop;
        return Err(StageFailed(format!(
            "deploy of {image}:{tag} to `{name}` not started: {} of {n} hosts {}: {}; no host was switched{hint}",
            unreachable.len(),
            if refused.is_empty() { "cannot be reached" } else { "refused for their host keys" },
            named.join(", ")
        ))
        .into());
    }
    let live: Vec<usize> = (0..n).filter(|i| !unreachable.contains(i)).collect();

    // Batch by batch; the first batch with a failure is the last.
    let delivery = Ship { refname: &job.refname, release };
    let mut asked = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut interrupted = None;
    for batch in live.chunks(fleet.batch()) {
        let results = in_parallel(batch.to_vec(), |&i| fleet.ship(i, &delivery));
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
    let back_release = Shipment {
        commit: previous.commit.clone(),
        image: previous.image.clone(),
        tag: previous.tag.clone(),
        rollback: true,
        images: previous.images.clone(),
        pulled_from: release.pulled_from.clone(),
        ..Shipment::default()
    };
    let back = Ship { refname: &previous.refname, release: &back_release };
    // All at once: the sooner every host serves one release again, the better.
    let results = in_parallel(asked.clone(), |&i| fleet.ship(i, &back));
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
