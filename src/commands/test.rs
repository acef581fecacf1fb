//! `pipe test`: run the project's test command inside the image built for a commit.
//! `--here` builds and tests the working tree a developer stands in.

use std::time::Duration;

use super::context::Context;
use crate::cli::TestArgs;
use crate::docker::client::Docker;
use crate::engine::test::{self, TestJob};
use crate::engine::{self, Session, here, statuses};
use crate::error::{StageFailed, code};

pub(super) fn run(cx: &Context, args: &TestArgs) -> anyhow::Result<u8> {
    if args.here {
        engine::here_takes_no_project(&args.project)?;
        let Some(built) = here::build_here(&cx.out, args.dry_run)? else { return Ok(code::OK) };
        if built.images.iter().all(|i| i.test.is_none()) {
            cx.out.info("no test command: set `test` in .pipe.toml");
            return Ok(code::OK);
        }
        for image in &built.images {
            let Some(command) = image.test.clone() else {
                cx.out.info(format!("{}: no test command", image.reference));
                continue;
            };
            let confinement = crate::docker::Confinement::default();
            let nologin = tempfile::Builder::new().prefix("pipe-nologin-").tempdir()?;
            let job = TestJob {
                label: format!("here-{}", std::process::id()),
                image: image.reference.clone(),
                command: &command,
                env: built.plan.test_env.clone(),
                secrets: Vec::new(),
                services: built.plan.test_services.clone().map(|(_, s)| s),
                confinement,
                compose_config: nologin.path().to_path_buf(),
                timeout: Duration::from_secs(3600),
                log: std::env::temp_dir().join(format!("pipe-here-test-{}.log", std::process::id())),
                echo: !cx.out.quiet,
            };
            let finished = test::run_job(&cx.out, &Docker::new(None), &job)?;
            if !finished.success() {
                return Err(StageFailed(format!("tests of {} failed: {}", image.reference, finished.describe())).into());
            }
            cx.out.info(format!("tests of {} passed on branch {}", image.reference, built.branch));
        }
        return Ok(code::OK);
    }
    let name = args.project.as_deref().expect("clap requires PROJECT without --here");
    let session = Session::open(cx.config()?, cx.state_path()?, name, "test", args.dry_run)?;
    let job = session.job(cx.out, name, args.reference.as_deref());
    let mut files = job.files()?;
    if args.dry_run {
        let run = engine::latest_built(&files.history, None).ok_or_else(|| engine::not_built(&job))?;
        let Some(command) = &run.test else {
            crate::output::println("# no test command: the test stage records `skipped`")?;
            return Ok(code::OK);
        };
        let (test_job, docker) = test::plan(&job, run, command, false)?;
        crate::output::println(test_job.dry_run(&docker))?;
        return Ok(code::OK);
    }
    let commit = engine::latest_built(&files.history, None).map(|r| r.commit.clone());
    let tested =
        statuses::by_hand(&job, &mut files, "pipe/test", commit.as_deref(), |files| test::test(&job, files, None));
    let settled = job.settle(&session.state, files.take_unsettled(), None);
    engine::conclude(tested, settled)?;
    Ok(code::OK)
}
