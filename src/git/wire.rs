//! The git wire protocol's ref advertisement (protocol v0), read as a stream of pkt-lines with
//! hard caps, shared by HTTP(S), `git://` and SSH listings. A remote is not trusted: it may send
//! an endless advertisement, absurd lengths or ids that are not ids; each of those is an error
//! naming the remote, never unbounded memory.

use std::io::Read;

use anyhow::{anyhow, bail};

/// The most advertisement bytes read from one remote (16 MiB: about 230,000 refs of ordinary
/// length; GitHub's largest public repositories advertise a few MiB including pull requests).
pub(super) const MAX_ADVERTISEMENT_BYTES: usize = 16 << 20;
/// The most refs kept from one remote. Together with the byte cap this bounds what a poll of a
/// hostile remote holds in memory (about 30 MB) before it gives up on that remote.
pub(super) const MAX_REFS: usize = 200_000;
/// The longest ref name accepted. Git itself cannot store much longer names (one file per ref
/// component), so a longer one is a broken or hostile remote.
pub(super) const MAX_REF_NAME: usize = 4096;

/// Reads pkt-lines up to the flush that ends the advertisement: an optional smart-HTTP
/// `# service=…` section first, then `<oid> <ref>[\0caps]` lines. Returns (full name, commit id),
/// peeled tags (`^{}`) and the empty repository's `capabilities^{}` line dropped.
pub(super) fn read_advertisement(input: impl Read) -> anyhow::Result<Vec<(String, String)>> {
    // Buffered: a pkt-line is read as its 4-byte length and then its payload, and unbuffered
    // that is two `recv`s per ref (about 100 system calls for a 50-branch repository, each a
    // wake-up of the transport's thread over HTTP). The server sends nothing past the flush
    // until the client answers, so nothing the buffer holds beyond it is lost.
    let mut input = std::io::BufReader::with_capacity(16 * 1024, input);
    let mut reader = PktReader { input: &mut input, read: 0, buf: Vec::with_capacity(1024) };
    let mut refs = Vec::new();
    let mut first = true;
    let mut in_service_header = false;
    loop {
        let Some(line) = reader.next()? else {
            if in_service_header {
                in_service_header = false;
                continue;
            }
            return Ok(refs);
        };
        if first && line.starts_with(b"# service=") {
            first = false;
            in_service_header = true;
            continue;
        }
        first = false;
        if let Some(message) = line.strip_prefix(b"ERR ") {
            bail!("the server said: {}", printable(message));
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.split(|b| *b == 0).next().unwrap_or(line);
        let Some(space) = line.iter().position(|b| *b == b' ') else {
            bail!("bad ref line {}", printable(line));
        };
        let (oid, name) = (&line[..space], &line[space + 1..]);
        if !is_object_id(oid) {
            bail!("bad object id {}", printable(oid));
        }
        if name.ends_with(b"^{}") {
            continue;
        }
        if name.len() > MAX_REF_NAME {
            bail!("a ref name is longer than {MAX_REF_NAME} bytes");
        }
        let Ok(name) = std::str::from_utf8(name) else {
            bail!("ref name {} is not UTF-8", printable(name));
        };
        if refs.len() == MAX_REFS {
            bail!("more than {MAX_REFS} refs advertised; pipe stops reading there");
        }
        // The oid is ASCII hex, checked above.
        refs.push((name.to_string(), String::from_utf8_lossy(oid).into_owned()));
    }
}

/// A SHA-1 or SHA-256 object id in lowercase hex.
fn is_object_id(oid: &[u8]) -> bool {
    (oid.len() == 40 || oid.len() == 64) && oid.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Bytes from the remote as a quoted, escaped string (control characters and all), at most
/// 200 characters: safe to print on a terminal or in the journal.
pub(super) fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let text = text.trim_end_matches('\n');
    format!("{text:?}")
}

struct PktReader<'a, R: Read> {
    input: &'a mut R,
    read: usize,
    buf: Vec<u8>,
}

impl<R: Read> PktReader<'_, R> {
    /// The next pkt-line's payload, or `None` for a flush packet.
    fn next(&mut self) -> anyhow::Result<Option<&[u8]>> {
        let mut len_hex = [0u8; 4];
        self.fill(&mut len_hex)?;
        let len = std::str::from_utf8(&len_hex)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| anyhow!("bad pkt-line length {}", printable(&len_hex)))?;
        match len {
            0 => return Ok(None),
            1..=3 => bail!("bad pkt-line length {len}"),
            _ => {}
        }
        self.buf.resize(len - 4, 0);
        let mut buf = std::mem::take(&mut self.buf);
        self.fill(&mut buf)?;
        self.buf = buf;
        Ok(Some(&self.buf))
    }

    fn fill(&mut self, out: &mut [u8]) -> anyhow::Result<()> {
        if self.read + out.len() > MAX_ADVERTISEMENT_BYTES {
            bail!(
                "the ref advertisement is larger than {} MiB; pipe stops reading there",
                MAX_ADVERTISEMENT_BYTES >> 20
            );
        }
        self.input.read_exact(out).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => anyhow!("the ref advertisement ended early"),
            _ => anyhow!("cannot read the ref advertisement: {e}"),
        })?;
        self.read += out.len();
        Ok(())
    }
}

/// One pkt-line.
pub(super) fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt_str(s: &str) -> String {
        format!("{:04x}{s}", s.len() + 4)
    }

    #[test]
    fn smart_http_advertisement_is_parsed() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let body = format!(
            "{}0000{}{}{}0000",
            pkt_str("# service=git-upload-pack\n"),
            pkt_str(&format!("{a} HEAD\0multi_ack symref=HEAD:refs/heads/main\n")),
            pkt_str(&format!("{a} refs/heads/main\n")),
            pkt_str(&format!("{b} refs/tags/v1^{{}}\n")),
        );
        let refs = read_advertisement(body.as_bytes()).unwrap();
        assert_eq!(refs, vec![("HEAD".into(), a.clone()), ("refs/heads/main".into(), a)]);
    }

    #[test]
    fn reading_stops_at_the_flush_that_ends_the_refs() {
        let a = "a".repeat(40);
        let body = format!("{}0000this is never read", pkt_str(&format!("{a} refs/heads/main\0caps\n")));
        assert_eq!(read_advertisement(body.as_bytes()).unwrap(), vec![("refs/heads/main".into(), a)]);
    }

    #[test]
    fn empty_repository_has_no_refs() {
        let zero = "0".repeat(40);
        let body = format!(
            "{}0000{}0000",
            pkt_str("# service=git-upload-pack\n"),
            pkt_str(&format!("{zero} capabilities^{{}}\0agent=x\n"))
        );
        assert_eq!(read_advertisement(body.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read_advertisement(&b"zzzz"[..]).is_err());
        assert!(read_advertisement(&b"00ff short"[..]).is_err());
        assert!(read_advertisement(&b"0002"[..]).is_err());
        let bad_oid = pkt_str("$(reboot)000000000000000000000000000000 refs/heads/x\n");
        let err = read_advertisement(format!("{bad_oid}0000").as_bytes()).unwrap_err().to_string();
        assert!(err.contains("bad object id"), "{err}");
    }

    #[test]
    fn an_endless_advertisement_stops_at_the_cap() {
        let line = pkt(format!("{} refs/heads/{}\n", "c".repeat(40), "x".repeat(3000)).as_bytes());
        let err = read_advertisement(Endless(line, 0)).unwrap_err().to_string();
        assert!(err.contains("larger than 16 MiB"), "{err}");
    }

    #[test]
    fn too_many_refs_are_an_error() {
        let line = pkt(format!("{} refs/heads/x\n", "c".repeat(40)).as_bytes());
        let err = read_advertisement(Endless(line, 0)).unwrap_err().to_string();
        assert!(err.contains("more than 200000 refs"), "{err}");
    }

    #[test]
    fn server_errors_are_shown_escaped() {
        let body = pkt_str("ERR access denied\x1b[2J\n");
        let err = read_advertisement(body.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "the server said: \"access denied\\u{1b}[2J\"");
    }

    /// The same bytes over and over.
    struct Endless(Vec<u8>, usize);

    impl Read for Endless {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 = (self.1 + n) % self.0.len();
            Ok(n)
        }
    }
}
