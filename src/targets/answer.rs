//! The health check's last answer, as a deploy's report shows it: the HTTP status and a short
//! excerpt of the body, or why nothing answered. Bounded (the body read is capped and the
//! excerpt cut), masked with the target's secrets, and free of control characters, so an
//! app's error page cannot bloat a status document or leak what the target was given.

use std::io::Read as _;

use serde::{Deserialize, Serialize};

use crate::trust::redact::Redactor;

/// Bytes of a body read at most; the excerpt keeps [`EXCERPT`] characters of them.
const READ: u64 = 4096;
/// Characters of the body an answer keeps.
pub(crate) const EXCERPT: usize = 256;

/// What the health check last saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HealthAnswer {
    /// What was asked: the URL (credentials removed), a container's address, or its name.
    pub url: String,
    /// The HTTP status of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the last answer's body (at most 256 characters, secrets masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Why no answer came (connection refused, a timeout, a container's state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HealthAnswer {
    /// An HTTP answer: its status and the start of its body.
    pub(crate) fn answered(url: &str, resp: reqwest::blocking::Response, redactor: &Redactor) -> HealthAnswer {
        let status = Some(resp.status().as_u16());
        let mut bytes = Vec::new();
        let _ = resp.take(READ).read_to_end(&mut bytes);
        let body = excerpt(&bytes, redactor);
        HealthAnswer { url: redactor.text(url), status, body: (!body.is_empty()).then_some(body), error: None }
    }

    /// No HTTP answer: why.
    pub(crate) fn failed(url: &str, error: &str, redactor: &Redactor) -> HealthAnswer {
        HealthAnswer {
            url: redactor.text(url),
            status: None,
            body: None,
            error: Some(excerpt(error.as_bytes(), redactor)),
        }
    }

    /// One line for messages: `HTTP 503 "db down"` or the error.
    pub(crate) fn describe(&self) -> String {
        match (self.status, &self.body, &self.error) {
            (Some(code), Some(body), _) => format!("`{}` answered HTTP {code}: {body:?}", self.url),
            (Some(code), None, _) => format!("`{}` answered HTTP {code}", self.url),
            (None, _, Some(e)) => format!("`{}`: {e}", self.url),
            (None, _, None) => format!("`{}`: no answer", self.url),
        }
    }
}

/// The start of `bytes` as text: secrets masked first, then control characters replaced and
/// the text cut to [`EXCERPT`] characters.
fn excerpt(bytes: &[u8], redactor: &Redactor) -> String {
    let text = redactor.text(&String::from_utf8_lossy(bytes));
    let mut out: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).take(EXCERPT).collect();
    if text.trim().chars().count() > EXCERPT {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn an_excerpt_is_masked_bounded_and_printable() {
        let secret = Secret::for_tests("hunter2-db-password");
        let redactor = Redactor::new([&secret]);
        let body = format!("error: cannot connect with hunter2-db-password\r\n\x1b[31m{}", "x".repeat(5000));
        let e = excerpt(body.as_bytes(), &redactor);
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.starts_with("error: cannot connect with ***"), "{e}");
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert_eq!(e.chars().count(), EXCERPT + 1);
        let a = HealthAnswer::failed("http://10.0.0.2:8080/health", "connection refused", &redactor);
        assert_eq!(a.describe(), "`http://10.0.0.2:8080/health`: connection refused");
    }
}
