//! The one configuration of every HTTP client pipe uses, so that a credential never leaves the
//! origin it was given for: a forge token in any spelling (`Authorization: Bearer`,
//! `Authorization: token`, `PRIVATE-TOKEN`), a webhook's token or signature, a URL's userinfo,
//! the secret path of a Slack URL.
//!
//! - reqwest clients come from [`builder`]. With [`Redirects::SameOrigin`] (commit statuses,
//!   notifications, deploy webhooks, health checks) a redirect is followed only while it stays
//!   on the first request's origin (scheme, host and port), at most [`MAX_REDIRECTS`] times;
//!   with [`Redirects::None`] (git listings, a new container's readiness) never. A redirect not
//!   followed is the answer the caller gets, and [`unfollowed`] says so to the operator. reqwest's
//!   own rule, which strips only `Authorization` and cookies on the way to another host, would
//!   send GitLab's `PRIVATE-TOKEN` or a webhook's signature along.
//! - libcurl handles (discovery's listing pages; libgit2's fetches through git2-curl, which turns
//!   following on for each of its requests) go through [`curl_refusing_redirects`]: no redirect
//!   is followed at all, and credentials go only to the host named.

/// At most this many redirects on one origin.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// How long a client keeps an idle connection for its next request.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Which redirects a client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redirects {
    /// Those on the first request's origin.
    SameOrigin,
    /// None: a 3xx is the answer.
    None,
}

/// A blocking reqwest client builder with pipe's redirect rule and user agent; callers add
/// their timeouts (and the git listing its pool and roots), never another redirect policy.
pub(crate) fn builder(redirects: Redirects) -> reqwest::blocking::ClientBuilder {
    let policy = match redirects {
        Redirects::None => reqwest::redirect::Policy::none(),
        Redirects::SameOrigin => reqwest::redirect::Policy::custom(|attempt| {
            // `previous` starts with the first request's URL.
            let stays = attempt.previous().first().is_some_and(|first| same_origin(first, attempt.url()));
            if !stays {
                attempt.stop()
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else {
                attempt.follow()
            }
        }),
    };
    reqwest::blocking::Client::builder()
        .redirect(policy)
        .referer(false)
        .user_agent(concat!("pipe/", env!("CARGO_PKG_VERSION")))
        // An idle connection is reused only well within the 10 s after which `pipe serve` (and
        // many servers) close one, so a request is never sent on a connection being closed.
        .pool_idle_timeout(POOL_IDLE)
}

/// Whether two URLs share an origin: scheme, host and port (the scheme's default when absent).
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// For a redirect the client did not follow, what to tell the operator: where it pointed (its
/// origin only: a `Location` may carry a token of its own) and why it was not followed.
pub(crate) fn unfollowed(response: &reqwest::blocking::Response) -> Option<String> {
    let status = response.status();
    if !status.is_redirection() {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
    Some(redirect_refused(status.as_u16(), response.url(), location))
}

/// [`unfollowed`]'s words for a redirect from `from` to `location`, for a client that is not
/// reqwest's (the plain-HTTP git listing).
pub(crate) fn redirect_refused(status: u16, from: &reqwest::Url, location: Option<&str>) -> String {
    let target = location.and_then(|l| from.join(l).ok());
    match target {
        Some(target) if !same_origin(from, &target) => format!(
            "answered HTTP {status} redirecting to another origin, `{}`: not followed (the credentials would go with it); use the URL it points to",
            target.origin().ascii_serialization()
        ),
        Some(target) => format!(
            "answered HTTP {status} redirecting to `{}{}`: not followed here; use the URL it points to",
            target.origin().ascii_serialization(),
            target.path()
        ),
        None => format!("answered HTTP {status} without a usable `Location`"),
    }
}

/// Makes a libcurl handle follow no redirect (even when a library later asks it to, as
/// git2-curl does for each request: libcurl then fails the transfer at the first 3xx) and send
/// credentials only to the host its URL names.
pub(crate) fn curl_refusing_redirects(easy: &mut curl::easy::Easy) -> Result<(), curl::Error> {
    easy.follow_location(false)?;
    easy.max_redirections(0)?;
    easy.unrestricted_auth(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn an_origin_is_scheme_host_and_port() {
        assert!(same_origin(&url("https://api.github.com/a"), &url("https://api.github.com:443/b?c")));
        assert!(same_origin(&url("https://bob:pw@h.example/a"), &url("https://h.example/b")));
        assert!(!same_origin(&url("https://h.example/a"), &url("http://h.example/a")));
        assert!(!same_origin(&url("http://127.0.0.1:8080/a"), &url("http://127.0.0.1:8081/a")));
        assert!(!same_origin(&url("https://h.example/a"), &url("https://h.example.evil/a")));
        assert!(!same_origin(&url("https://h.example/a"), &url("https://sub.h.example/a")));
    }
}
