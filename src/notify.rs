//! Notifications: a Slack incoming webhook (text plus an attachment coloured by result) and a
//! generic JSON webhook. A notification that cannot be delivered is a warning, never a failed
//! run; the webhook URLs are secrets and never appear in messages.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::config::{Config, Event, SecretRef};
use crate::model::{Stage, Verdict};
use crate::output::Output;
use crate::secret;

/// Something worth telling people about one ref.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Notice {
    pub event: EventKind,
    pub project: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub commit: String,
    /// The stage that failed, or the last stage that ran.
    pub stage: Stage,
    pub result: Verdict,
    pub seconds: f64,
    /// The last lines of the run's log (failures only).
    pub log_tail: String,
    /// The run's page on the status page (the ref's before a run was recorded), when it is
    /// served with a `public_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where a pull request's preview answers (deploy notices of previews).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    /// A release of several images: each as `NAME COMMIT` (the commit its build comes from),
    /// `(built)` when this run built it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// Which `on = [...]` entry a notice answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventKind {
    Failure,
    Recovery,
    Success,
    Deploy,
}

impl EventKind {
    fn matches(self, event: Event) -> bool {
        matches!(
            (self, event),
            (EventKind::Failure, Event::Failure)
                | (EventKind::Recovery, Event::Recovery)
                | (EventKind::Success, Event::Success)
                | (EventKind::Deploy, Event::Deploy)
        )
    }
}

/// The Slack message: a one-line text and an attachment with the details. Everything that
/// comes from a repository or a run (project, ref, log lines) passes through
/// [`slack_escape`], so a branch name or a log line cannot add links or mentions.
pub(crate) fn slack_payload(n: &Notice) -> serde_json::Value {
    let (color, verb) = match n.event {
        EventKind::Failure => ("danger", "failed"),
        EventKind::Recovery => ("good", "recovered"),
        EventKind::Success => ("good", "succeeded"),
        EventKind::Deploy => ("#439FE0", "deployed"),
    };
    let short = slack_escape(n.commit.get(..12).unwrap_or(&n.commit));
    let refname = slack_escape(crate::refs::display(&n.refname));
    let project = slack_escape(&n.project);
    let stage = n.stage.as_str();
    let mut fields = vec![
        json!({"title": "Project", "value": project, "short": true}),
        json!({"title": "Ref", "value": refname, "short": true}),
        json!({"title": "Commit", "value": short, "short": true}),
        json!({"title": "Stage", "value": format!("{stage} ({})", n.result), "short": true}),
        json!({"title": "Duration", "value": format!("{:.1}s", n.seconds), "short": true}),
    ];
    if let Some(url) = &n.preview_url {
        fields.push(json!({"title": "Preview", "value": slack_escape(url), "short": false}));
    }
    if !n.images.is_empty() {
        fields.push(json!({"title": "Images", "value": slack_escape(&n.images.join(", ")), "short": false}));
    }
    if !n.log_tail.is_empty() {
        // A log line cannot close the code block early either.
        let tail = slack_escape(&n.log_tail).replace("```", "`\u{200b}``");
        fields.push(json!({"title": "Last log lines", "value": format!("```{tail}```"), "short": false}));
    }
    let mut attachment = json!({"color": color, "fallback": format!("{project} {refname} {verb}"), "fields": fields});
    if let Some(url) = &n.url {
        attachment["title"] = json!("Runs and logs");
        attachment["title_link"] = json!(url);
    }
    json!({
        "text": format!("{project} {refname} {verb} at {stage} ({short})"),
        "attachments": [attachment],
    })
}

/// Slack's message escaping (`&`, `<`, `>`, the only characters Slack's markup needs escaped),
/// which also disarms `<!channel>`, `<@U123>` and `<http://…|text>`; plain-text mentions
/// (`@here`, `@channel`, `@everyone`) get a zero-width space after the `@`, so they show as
/// typed but notify nobody.
pub(crate) fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => {
                out.push('@');
                let word: String = rest[1..].chars().take_while(|c| c.is_ascii_alphabetic()).collect();
                if ["here", "channel", "everyone"].iter().any(|m| word.eq_ignore_ascii_case(m)) {
                    out.push('\u{200b}');
                }
            }
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The generic webhook body.
pub(crate) fn generic_payload(n: &Notice) -> serde_json::Value {
    let mut doc = serde_json::to_value(n).unwrap_or_default();
    doc["version"] = json!(1);
    doc
}

/// Sends every notice to every sink configured for its event; failures become warnings.
pub(crate) fn send(out: &Output, config: &Config, notices: &[Notice]) {
    if notices.is_empty() {
        return;
    }
    let built = crate::http::builder(crate::http::Redirects::SameOrigin).timeout(Duration::from_secs(10)).build();
    let client = match built {
        Ok(c) => c,
        Err(e) => {
            out.warn(format!("notifications not sent: {e}"));
            return;
        }
    };
    let sinks = [
        config
            .notify
            .slack
            .as_ref()
            .map(|s| ("slack", SecretRef::from_pair(&s.webhook_url_env, &s.webhook_url_file), &s.on)),
        config.notify.webhook.as_ref().map(|w| ("webhook", SecretRef::from_pair(&w.url_env, &w.url_file), &w.on)),
    ];
    for (sink, url, on) in sinks.into_iter().flatten() {
        let wanted: Vec<&Notice> = notices.iter().filter(|n| on.iter().any(|e| n.event.matches(*e))).collect();
        if wanted.is_empty() {
            continue;
        }
        let Some(url) = url else { continue };
        let url = match secret::resolve(&url, &format!("notify.{sink}.url")) {
            Ok(u) => u,
            Err(e) => {
                out.warn(format!("{sink} notification not sent: {e:#}"));
                continue;
            }
        };
        for notice in wanted {
            let body = if sink == "slack" { slack_payload(notice) } else { generic_payload(notice) };
            let result =
                client.post(url.reveal()).header("Content-Type", "application/json").body(body.to_string()).send();
            match result {
                Ok(resp) if resp.status().is_success() => {
                    out.detail(format!("{sink}: notified {:?} for {} {}", notice.event, notice.project, notice.refname))
                }
                Ok(resp) => match crate::http::unfollowed(&resp) {
                    Some(why) => {
                        out.warn(format!("{sink} notification for {} not sent: the URL {why}", notice.project))
                    }
                    None => out.warn(format!(
                        "{sink} notification for {} was refused: HTTP {}",
                        notice.project,
                        resp.status().as_u16()
                    )),
                },
                Err(e) => out.warn(format!(
                    "{sink} notification for {} failed: {}",
                    notice.project,
                    crate::secret::http_cause(&e)
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: EventKind) -> Notice {
        Notice {
            event,
            project: "web".into(),
            refname: "refs/heads/dev".into(),
            commit: "0123456789abcdef0123".into(),
            stage: Stage::Test,
            result: Verdict::Failed,
            seconds: 12.34,
            log_tail: "assert 1 == 2".into(),
            url: None,
            preview_url: None,
            images: Vec::new(),
        }
    }

    #[test]
    fn a_served_status_page_is_linked_from_the_message() {
        let mut n = notice(EventKind::Failure);
        assert!(slack_payload(&n)["attachments"][0].get("title_link").is_none());
        n.url = Some(crate::page::ref_url("https://ci.example.com/", "web", "refs/heads/dev"));
        let payload = slack_payload(&n);
        assert_eq!(
            payload["attachments"][0]["title_link"],
            "https://ci.example.com/status/ref?project=web&ref=refs%2Fheads%2Fdev"
        );
    }

    #[test]
    fn slack_failure_is_red_with_the_details() {
        let p = slack_payload(&notice(EventKind::Failure));
        assert_eq!(p["text"], "web dev failed at test (0123456789ab)");
        assert_eq!(p["attachments"][0]["color"], "danger");
        let fields = p["attachments"][0]["fields"].as_array().unwrap();
        assert_eq!(fields[3]["value"], "test (failed)");
        assert_eq!(fields[4]["value"], "12.3s");
        assert_eq!(fields[5]["value"], "```assert 1 == 2```");
    }

    #[test]
    fn slack_text_from_repositories_is_escaped_and_mentions_nobody() {
        assert_eq!(
            slack_escape("a & <b> @here @Channel @everyone! @hereafter me@x"),
            "a &amp; &lt;b&gt; @\u{200b}here @\u{200b}Channel @\u{200b}everyone! @hereafter me@x"
        );
        let mut n = notice(EventKind::Failure);
        n.project = "web<!channel>".into();
        n.refname = "refs/heads/x<!here>&<https://evil.example|click>".into();
        n.log_tail = "boom <!everyone> @channel\n```\n*bold*".into();
        let p = slack_payload(&n);
        let text = p.to_string();
        for raw in ["<!channel>", "<!here>", "<!everyone>", "<https://", "@channel"] {
            assert!(!text.contains(raw), "{raw} reached Slack unescaped: {text}");
        }
        assert_eq!(
            p["text"],
            "web&lt;!channel&gt; x&lt;!here&gt;&amp;&lt;https://evil.example|click&gt; failed at test (0123456789ab)"
        );
        let tail = p["attachments"][0]["fields"][5]["value"].as_str().unwrap();
        assert_eq!(tail.matches("```").count(), 2, "the log cannot close the code block: {tail}");
    }

    #[test]
    fn generic_payload_is_versioned() {
        let p = generic_payload(&notice(EventKind::Recovery));
        assert_eq!(p["version"], 1);
        assert_eq!(p["event"], "recovery");
        assert_eq!(p["ref"], "refs/heads/dev");
    }
}
