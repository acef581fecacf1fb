//! Notifications: a Slack incoming webhook (text plus an attachment coloured by result) and a
//! generic JSON webhook. A notification that cannot be delivered is a warning, never a failed
//! run; the webhook URLs are secrets and never appear in messages.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::config::{Config, Event, SecretRef};
use crate::output::Output;
use crate::secret;

/// Something worth telling people about one ref.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub event: EventKind,
    pub project: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub commit: String,
    /// The stage that failed, or the last stage that ran.
    pub stage: String,
    pub result: String,
    pub seconds: f64,
    /// The last lines of the run's log (failures only).
    pub log_tail: String,
}

/// Which `on = [...]` entry a notice answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
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

/// The Slack message: a one-line text and an attachment with the details.
pub fn slack_payload(n: &Notice) -> serde_json::Value {
    let (color, verb) = match n.event {
        EventKind::Failure => ("danger", "failed"),
        EventKind::Recovery => ("good", "recovered"),
        EventKind::Success => ("good", "succeeded"),
        EventKind::Deploy => ("#439FE0", "deployed"),
    };
    let short = n.commit.get(..12).unwrap_or(&n.commit);
    let refname = crate::refs::display(&n.refname);
    let mut fields = vec![
        json!({"title": "Project", "value": n.project, "short": true}),
        json!({"title": "Ref", "value": refname, "short": true}),
        json!({"title": "Commit", "value": short, "short": true}),
        json!({"title": "Stage", "value": format!("{} ({})", n.stage, n.result), "short": true}),
        json!({"title": "Duration", "value": format!("{:.1}s", n.seconds), "short": true}),
    ];
    if !n.log_tail.is_empty() {
        fields.push(json!({"title": "Last log lines", "value": format!("```{}```", n.log_tail), "short": false}));
    }
    json!({
        "text": format!("{} {refname} {verb} at {} ({short})", n.project, n.stage),
        "attachments": [{"color": color, "fallback": format!("{} {refname} {verb}", n.project), "fields": fields}],
    })
}

/// The generic webhook body.
pub fn generic_payload(n: &Notice) -> serde_json::Value {
    let mut doc = serde_json::to_value(n).unwrap_or_default();
    doc["version"] = json!(1);
    doc
}

/// Sends every notice to every sink configured for its event; failures become warnings.
pub fn send(out: &Output, config: &Config, notices: &[Notice]) {
    if notices.is_empty() {
        return;
    }
    let client = match reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build() {
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
                Ok(resp) => out.warn(format!(
                    "{sink} notification for {} was refused: HTTP {}",
                    notice.project,
                    resp.status().as_u16()
                )),
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
            stage: "test".into(),
            result: "failed".into(),
            seconds: 12.34,
            log_tail: "assert 1 == 2".into(),
        }
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
    fn generic_payload_is_versioned() {
        let p = generic_payload(&notice(EventKind::Recovery));
        assert_eq!(p["version"], 1);
        assert_eq!(p["event"], "recovery");
        assert_eq!(p["ref"], "refs/heads/dev");
    }
}
