//! What the fleet tests and benchmarks (`bench/fleet.sh`, both models) measure through every
//! host's nginx: load at ~30 requests a second per host with each answer kept with its time, and
//! from it one deploy's figures (the command, until every host serves the release, the window of
//! mixed releases, failed requests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::TestEnv;
use super::hosts::Host;

/// One host's answers, each with the instant its request started: the body of a 200, or what
/// went wrong.
pub type Answers = Vec<(Instant, Result<String, String>)>;

/// Requests through every host's nginx (`port`, `Host: app_host`), ~30 a second each, until
/// finished.
pub struct TimedLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Answers>>,
}

impl TimedLoad {
    pub fn start(hosts: &[Host], port: u16, app_host: &str) -> TimedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = hosts
            .iter()
            .map(|h| {
                let (ip, stop, app_host) = (h.ip.to_string(), stop.clone(), app_host.to_string());
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        answers.push((started, super::load::request(&ip, port, &app_host, "/")));
                        std::thread::sleep(Duration::from_millis(33).saturating_sub(started.elapsed()));
                    }
                    answers
                })
            })
            .collect();
        TimedLoad { stop, threads }
    }

    /// Stops and returns every host's answers with their times.
    pub fn finish(self) -> Vec<Answers> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// Stops and returns, per host, the answers by release and the failures.
    pub fn finish_tallied(self) -> Vec<(BTreeMap<String, usize>, Vec<String>)> {
        self.finish().into_iter().map(|answers| tally(&answers)).collect()
    }
}

fn tally(answers: &[(Instant, Result<String, String>)]) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut by = BTreeMap::new();
    let mut failed = Vec::new();
    for (_, a) in answers {
        match a {
            Ok(body) => *by.entry(body.clone()).or_insert(0) += 1,
            Err(e) => failed.push(e.clone()),
        }
    }
    (by, failed)
}

/// Failed requests and all requests of these hosts' answers.
fn failures(answers: &[Answers]) -> (usize, usize) {
    let failed = answers.iter().map(|a| a.iter().filter(|(_, r)| r.is_err()).count()).sum();
    (failed, answers.iter().map(Vec::len).sum())
}

/// Runs `deploy` (which deploys `release` to the first `scope` of `hosts`) under load from 1 s
/// before it to 2 s after it: the command's time, the time from its start until every host of
/// `scope` answered with the release, the window between the first host's first such answer and
/// the last host's, and failed requests on those hosts. Printed as `mode: …` too.
pub fn measure(
    hosts: &[Host],
    (port, app_host): (u16, &str),
    mode: &str,
    release: &str,
    scope: usize,
    deploy: impl FnOnce(),
) -> serde_json::Value {
    let load = TimedLoad::start(hosts, port, app_host);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    deploy();
    let took = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let answers = load.finish();
    let firsts: Vec<f64> = answers[..scope]
        .iter()
        .map(|a| {
            a.iter()
                .find(|(at, r)| *at >= t0 && r.as_deref() == Ok(release))
                .map_or(f64::NAN, |(at, _)| at.duration_since(t0).as_secs_f64())
        })
        .collect();
    let serving = firsts.iter().cloned().fold(0.0, f64::max);
    let mixed = serving - firsts.iter().cloned().fold(f64::INFINITY, f64::min);
    let (failed, total) = failures(&answers[..scope]);
    eprintln!(
        "{mode}: command {took:.2}s, all serving after {serving:.2}s, mixed {mixed:.2}s, {failed}/{total} failed"
    );
    serde_json::json!({"command_s": took, "serving_s": serving, "mixed_s": mixed, "failed": failed, "requests": total})
}

/// Runs `deploy` (a release that fails on one host, which must roll every host back to
/// `previous`) under load: the command's time (to every host rolled back), how many hosts then
/// serve another answer than `previous` (`serving` asks each host), failed requests.
pub fn measure_failure(
    hosts: &[Host],
    (port, app_host): (u16, &str),
    previous: &str,
    deploy: impl FnOnce(),
    serving: impl FnOnce() -> Vec<Result<String, String>>,
) -> serde_json::Value {
    let load = TimedLoad::start(hosts, port, app_host);
    let t0 = Instant::now();
    deploy();
    let took = t0.elapsed().as_secs_f64();
    let off = serving().iter().filter(|s| s.as_deref() != Ok(previous)).count();
    let (failed, total) = failures(&load.finish());
    eprintln!("failure on host 3: {took:.2}s to rolled back, {off} hosts not on {previous}, {failed}/{total} failed");
    serde_json::json!({"command_s": took, "hosts_off_previous": off, "failed": failed, "requests": total})
}

/// A fleet the benchmark deploys to with pipe, whatever the model: a target `prod` on every
/// host and a target `one` on the first host alone.
pub struct PipeFleet<'a> {
    hosts: &'a [Host],
    env: &'a TestEnv,
    project: String,
    all_at_once: String,
    batch_1: String,
    /// Commits a release (failing its health check on the host labelled as the second
    /// argument), builds it and copies its image into every host's engine.
    release: &'a dyn Fn(&str, Option<&str>),
}

impl<'a> PipeFleet<'a> {
    /// `configs`: the pipeline file with `prod` all at once, and with `prod` one host a batch.
    pub fn new(
        hosts: &'a [Host],
        env: &'a TestEnv,
        project: String,
        (all_at_once, batch_1): (String, String),
        release: &'a dyn Fn(&str, Option<&str>),
    ) -> PipeFleet<'a> {
        PipeFleet { hosts, env, project, all_at_once, batch_1, release }
    }

    fn deploy(&self, target: &str, code: i32) {
        self.env.pipe(&["deploy", &self.project, "main", "--target", target]).code(code);
    }

    fn configure(&self, batch_1: bool) {
        self.env.config(if batch_1 { &self.batch_1 } else { &self.all_at_once });
    }
}

/// The benchmark's ways with pipe, `rounds` releases each (named `b1`, `b2`, … after `n`), into
/// `figures`: `one_host`, `batch_1`, `all_at_once`, then `failure_on_host3` (a release that
/// fails its health check on host 3, all at once).
pub fn pipe_ways(
    fleet: &PipeFleet,
    front: (u16, &str),
    rounds: usize,
    n: &mut usize,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) {
    fleet.configure(false);
    (fleet.release)("b0", None);
    fleet.deploy("prod", 0);
    fleet.deploy("one", 0);
    for (mode, batch_1, scope) in [("one_host", false, 1usize), ("batch_1", true, 4), ("all_at_once", false, 4)] {
        let target = if mode == "one_host" { "one" } else { "prod" };
        fleet.configure(batch_1);
        let samples = (0..rounds)
            .map(|_| {
                *n += 1;
                let release = format!("b{n}");
                (fleet.release)(&release, None);
                measure(fleet.hosts, front, mode, &release, scope, || fleet.deploy(target, 0))
            })
            .collect();
        figures.insert(mode.into(), serde_json::Value::Array(samples));
    }
    // Every host on the previous release after it.
    fleet.configure(false);
    *n += 1;
    let before = format!("b{n}");
    (fleet.release)(&before, None);
    fleet.deploy("prod", 0);
    *n += 1;
    (fleet.release)(&format!("b{n}"), Some("host3"));
    let serving = || fleet.hosts.iter().map(|h| h.get(front.0, front.1, "/")).collect();
    let failure = measure_failure(fleet.hosts, front, &before, || fleet.deploy("prod", 1), serving);
    figures.insert("failure_on_host3".into(), failure);
}
