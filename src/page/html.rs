//! The page's HTML, as maud templates: every value is escaped by maud, so branch names,
//! commit ids and log lines (untrusted) can only ever be text.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::overview::Overview;
use crate::model::{DeployResult, Outcome};
use crate::output::{age, short};
use crate::refs;
use crate::state::{History, Run};

type Link<'a> = &'a dyn Fn(&str) -> String;

fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn layout(title: &str, link: Link, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pipe" }
                link rel="stylesheet" href=(link("/status/style.css"));
            }
            body {
                nav { a href=(link("/status")) { "pipe status" } }
                (body)
            }
        }
    }
}

fn result(word: &str) -> Markup {
    html! { span class={ "result r-" (word) } { (word) } }
}

/// The absolute address of a ref's page (its runs, newest first) under the page's public URL:
/// what commit statuses and notifications link to.
pub(crate) fn ref_url(public_url: &str, project: &str, refname: &str) -> String {
    format!("{}/status/ref?project={}&ref={}", public_url.trim_end_matches('/'), enc(project), enc(refname))
}

/// The public address of one run's page (its stages and log).
pub(crate) fn run_url(public_url: &str, project: &str, refname: &str, run: u64) -> String {
    format!("{}/status/run?project={}&ref={}&run={run}", public_url.trim_end_matches('/'), enc(project), enc(refname))
}

fn ref_link(link: Link, project: &str, refname: &str) -> String {
    link(&format!("/status/ref?project={}&ref={}", enc(project), enc(refname)))
}

fn run_link(link: Link, project: &str, refname: &str, run: u64) -> String {
    link(&format!("/status/run?project={}&ref={}&run={run}", enc(project), enc(refname)))
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
}

pub(super) fn overview(ov: &Overview, link: Link) -> Markup {
    let now = crate::clock::now().as_second();
    let page_link = |page: usize| link(&format!("/status?q={}&result={}&page={page}", enc(&ov.query), enc(&ov.result)));
    layout(
        "status",
        link,
        html! {
            h1 { "Refs" }
            form method="get" action=(link("/status")) {
                input type="search" name="q" value=(ov.query) placeholder="project or ref contains";
                select name="result" {
                    @for word in filter_words() {
                        option value=(word) selected[word == ov.result] { @if word.is_empty() { "any result" } @else { (word) } }
                    }
                }
                button type="submit" { "filter" }
            }
            p.pager {
                (ov.total) " refs · page " (ov.page) " of " (ov.pages) " "
                @if ov.page > 1 { a rel="prev" href=(page_link(ov.page - 1)) { "← newer page" } }
                @if ov.page < ov.pages { a rel="next" href=(page_link(ov.page + 1)) { "next page →" } }
            }
            table id="refs" {
                thead { tr { th { "project" } th { "ref" } th { "stage" } th { "result" } th { "commit" } th { "age" } th { "duration" } } }
                tbody {
                    @for (row, run) in ov.report.refs.iter().zip(&ov.runs) {
                        tr class={ "r-" (row.result) } data-ref=(row.refname) {
                            td { (row.project) }
                            td {
                                a href=(ref_link(link, &row.project, &row.refname)) { (refs::display(&row.refname)) }
                                @if let Some(url) = &row.preview_url { " " a.preview href=(url) { "preview" } }
                            }
                            td.stage { (row.stage) }
                            td { (result(&row.result)) }
                            td.commit {
                                code { (short(&row.commit)) }
                                @if let Some(subject) = &run.subject { " " span.subject { (subject) } }
                                @if let Some(author) = &run.author { " " span.author { "by " (author) } }
                                @for (name, built, from) in &run.images {
                                    " " span.image title=(if *built { "built by this commit" } else { "unchanged: the build of an earlier commit" }) {
                                        (name) "=" code { (short(from)) }
                                    }
                                }
                            }
                            td { (age(row.age_seconds)) }
                            td { (seconds(run.seconds)) }
                        }
                    }
                }
            }
            h1 { "Deploy targets" }
            @if ov.targets.is_empty() { p { "No deploys recorded." } }
            @for t in &ov.targets {
                section.target data-target=(t.target) {
                    h2 { (t.project) " → " (t.target) }
                    @match &t.current {
                        Some(d) => p.current {
                            "runs " code.commit { (short(&d.commit)) } " (" (d.image) ":" (d.tag) ", "
                            @for (name, image) in &d.images { (name) " " (image) ":" (d.tag) ", " }
                            (refs::display(&d.refname)) ") since " (d.at.strftime("%Y-%m-%d %H:%M:%S UTC")) " (" (age(now - d.at.as_second())) " ago)"
                        },
                        None => p.current { "no successful deploy recorded" },
                    }
                    table.deploys {
                        thead { tr { th { "when" } th { "commit" } th { "ref" } th { "tag" } th { "result" } th { "hosts" } } }
                        tbody {
                            @for d in &t.deploys {
                                tr {
                                    td { (d.at.strftime("%Y-%m-%d %H:%M:%S")) }
                                    td { code { (short(&d.commit)) } }
                                    td { (refs::display(&d.refname)) }
                                    td { (d.tag) }
                                    td { (result(d.result.as_str())) @if d.result == DeployResult::RolledBack || d.rollback { " ↩ rollback" } }
                                    td.hosts {
                                        @for h in &d.hosts {
                                            span class={ "host r-" (h.result.as_str()) } { (h.host) " " (h.result.as_str()) @if let Some(why) = &h.detail { ": " (why) } }
                                            " "
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn stages_table(run: &Run) -> Markup {
    html! {
        table.stages {
            thead { tr { th { "stage" } th { "result" } th { "started" } th { "duration" } th { "exit code" } } }
            tbody {
                @for s in &run.stages {
                    tr class={ "r-" (s.result.as_str()) } {
                        td.stage { (s.stage.as_str()) }
                        td { (result(s.result.as_str())) }
                        td { (s.started.strftime("%Y-%m-%d %H:%M:%S")) }
                        td { (format!("{:.1}s", s.seconds)) }
                        td { (s.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

fn run_result(run: &Run) -> &'static str {
    run.stages.last().map_or("pending", |s| s.result.as_str())
}

pub(super) fn ref_page(project: &str, refname: &str, history: &History, link: Link) -> Markup {
    layout(
        refs::display(refname),
        link,
        html! {
            h1 { (project) " · " (refs::display(refname)) }
            table.runs {
                thead { tr { th { "run" } th { "commit" } th { "started" } th { "last stage" } th { "result" } th { "duration" } } }
                tbody {
                    @for run in history.runs.iter().rev() {
                        tr class={ "r-" (run_result(run)) } {
                            td { a href=(run_link(link, project, refname, run.number)) { "#" (run.number) } }
                            td { code { (short(&run.commit)) } }
                            td { (run.started.strftime("%Y-%m-%d %H:%M:%S")) }
                            td { (run.stages.last().map_or("-", |s| s.stage.as_str())) }
                            td { (result(run_result(run))) }
                            td { (format!("{:.1}s", run.stages.iter().map(|s| s.seconds).sum::<f64>())) }
                        }
                    }
                }
            }
        },
    )
}

/// Where [`run_page`] puts the log: the page is sent up to here, then the log is streamed into
/// it. A comment no escaped value can contain (maud turns every `<` into `&lt;`).
pub(super) const LOG_MARK: &str = "<!--pipe:log-->";

/// A run's page with [`LOG_MARK`] where the log's bytes `offset..len` go.
pub(super) fn run_page(project: &str, refname: &str, run: &Run, offset: u64, len: u64, link: Link) -> Markup {
    let at = |offset: u64| {
        link(&format!("/status/run?project={}&ref={}&run={}&offset={offset}", enc(project), enc(refname), run.number))
    };
    let tail = len.saturating_sub(super::log::CHUNK);
    let pager = html! {
        p.pager {
            "log bytes " (offset) "–" (len) " of " (len) " "
            @if offset > 0 { a href=(at(0)) { "← from the start" } }
            @if tail > offset { a href=(at(tail)) { "last 256 KiB →" } }
        }
    };
    layout(
        &format!("#{} {}", run.number, refs::display(refname)),
        link,
        html! {
            h1 { (project) " · " a href=(ref_link(link, project, refname)) { (refs::display(refname)) } " · run #" (run.number) }
            p { "commit " code.commit { (run.commit) } " · image " code { (run.image) } " · started " (run.started.strftime("%Y-%m-%d %H:%M:%S UTC")) " · " (result(run_result(run))) }
            (stages_table(run))
            h2 { "Log" }
            (pager)
            pre.log { (PreEscaped(LOG_MARK)) }
            (pager)
        },
    )
}

pub(super) fn error(status: u16, message: &str) -> Markup {
    layout("error", &|p: &str| p.to_string(), html! { h1 { (status) } p { (message) } })
}

/// The overview's result filter, in the order it offers them: any result, then each word a
/// ref's result can be (a stage's outcome, or `pending` and `seen` before any stage ran).
fn filter_words() -> [&'static str; 8] {
    use Outcome::*;
    ["", Failed.as_str(), TimedOut.as_str(), Passed.as_str(), "pending", "seen", Interrupted.as_str(), Skipped.as_str()]
}
