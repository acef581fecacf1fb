//! A request as the server hands it to the service, and its head parsed under RFC 9112's strict
//! rules (httparse): the framing (`Content-Length` only) is known before any body byte is read.

/// The largest request head (request line and headers).
pub(super) const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent as HTTP/1.0: a streamed answer is delimited by the close, not chunked.
    pub http10: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter (no percent-decoding beyond `%XX` of ASCII).
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a request head under RFC 9112's rules: `Ok(None)` while it is incomplete, else the
/// request and the head's length. Bare LF line endings, versions other than HTTP/1.0 and 1.1,
/// malformed or conflicting `Content-Length` are `400`.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if bare_lf(buf) { Err(400) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    if bare_lf(&buf[..len]) {
        return Err(400);
    }
    let target = parsed.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
            .collect(),
        body: Vec::new(),
        http10: parsed.version == Some(0),
    };
    content_length(&request)?;
    Ok(Some((request, len)))
}

/// A `\n` not preceded by `\r`.
fn bare_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// The body's length: `Content-Length` as 1*DIGIT, every copy equal; `Transfer-Encoding` is
/// refused (`411`): the limit must be known before reading.
pub(super) fn content_length(request: &Request) -> Result<u64, u16> {
    if request.header("transfer-encoding").is_some() {
        return Err(411);
    }
    let mut length = None;
    for (_, value) in request.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        if value.is_empty() || value.len() > 18 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(400);
        }
        let n: u64 = value.parse().map_err(|_| 400u16)?;
        if length.is_some_and(|l| l != n) {
            return Err(400);
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let r = Request { query: "token=a%2Bb&hook=web+app".into(), ..Default::default() };
        assert_eq!(r.query_param("token").as_deref(), Some("a+b"));
        assert_eq!(r.query_param("hook").as_deref(), Some("web app"));
        assert_eq!(r.query_param("x"), None);
    }

    /// A whole request from bytes, as the server frames it (4 KiB body limit).
    fn parse(bytes: &[u8]) -> Result<Request, u16> {
        let (mut request, len) = parse_head(bytes)?.ok_or(0u16)?;
        let length = content_length(&request)?;
        if length > 4096 {
            return Err(413);
        }
        let body = &bytes[len..];
        if (body.len() as u64) < length {
            return Err(0);
        }
        request.body = body[..length as usize].to_vec();
        Ok(request)
    }

    #[test]
    fn an_oversized_body_is_413_before_any_of_it_is_read() {
        assert_eq!(parse(b"POST /hooks/x HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").unwrap_err(), 413);
    }

    #[test]
    fn heads_follow_rfc_9112_strictly() {
        let cases: [(&[u8], u16); 9] = [
            (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400),
            (b"POST / HTTP/1.1\nContent-Length: 0\n\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\nA: b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab", 400),
            (b"POST / HTTP/1.99\r\n\r\n", 400),
            (b"POST /  HTTP/1.1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            (b"POST / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(parse(raw).map(|_| ()), Err(status), "{:?}", String::from_utf8_lossy(raw));
        }
        let same = parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab").unwrap();
        assert_eq!(same.body, b"ab");
        assert!(parse_head(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none(), "incomplete, not an error");
    }

    // Property tests (`prop_*`): `bench/run.sh` runs them with many more cases.
    proptest::proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_panic_or_overread(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8192)) {
            if let Ok(req) = parse(&bytes) {
                proptest::prop_assert!(req.body.len() <= 4096);
                proptest::prop_assert!(req.headers.len() <= MAX_HEADERS);
            }
        }

        #[test]
        fn prop_well_formed_requests_parse_to_what_was_sent(
            method in "(GET|POST|PUT|DELETE)",
            path in "(/[a-zA-Z0-9._~-]{0,12}){1,4}",
            query in "([a-z]{1,5}=[a-zA-Z0-9%+]{0,8}(&[a-z]{1,5}=[a-z0-9]{0,5}){0,3})?",
            headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~&&[^:]]{0,40}"), 0..10),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        ) {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("transfer-encoding"))
                .map(|(k, v)| (k, v.trim().to_string()))
                .collect();
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            let mut raw = format!("{method} {target} HTTP/1.1\r\n");
            for (k, v) in &headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = raw.into_bytes();
            bytes.extend_from_slice(&body);
            let req = parse(&bytes).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
            proptest::prop_assert_eq!(&req.method, &method);
            proptest::prop_assert_eq!(&req.path, &path);
            proptest::prop_assert_eq!(&req.query, &query);
            proptest::prop_assert_eq!(&req.body, &body);
            for (k, v) in &headers {
                proptest::prop_assert!(req.headers.iter().any(|(hk, hv)| hk == k && hv == v));
            }
        }
    }
}
