//! Connections kept for their next request (HTTP/1.1's persistent connections). A handler that
//! wrote its whole answer gives the connection back to the I/O thread, which reads it again
//! exactly as a new connection: in every bound, its clock restarted. A kept connection that
//! stays idle is closed without an answer when its head time runs out or a bound sheds it.
//! Reusing a connection spares the client and the receiver a TCP handshake, an accept and a
//! close per request.

use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use super::request::Request;

/// Requests one connection may carry; the last answer says `Connection: close`.
pub(super) const MAX_REQUESTS: u32 = 1000;

/// A connection given back, with the requests it carried so far.
pub(super) struct Given {
    pub stream: TcpStream,
    pub peer: IpAddr,
    pub served: u32,
    /// Made blocking to write its answer: the I/O thread makes it non-blocking again.
    pub blocking: bool,
}

/// Connections handlers gave back, and the descriptor that wakes the I/O thread for them.
pub(super) struct Kept {
    queue: Mutex<Vec<Given>>,
    /// An eventfd the I/O thread polls; `None` when none could be made (nothing is kept then).
    wake: Option<OwnedFd>,
}

impl Kept {
    pub(super) fn new() -> Kept {
        // SAFETY: eventfd(2) returns a new descriptor or -1; a valid one is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let wake = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
        Kept { queue: Mutex::default(), wake }
    }

    /// The descriptor to poll for connections given back.
    pub(super) fn fd(&self) -> Option<RawFd> {
        self.wake.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Whether connections can be given back at all.
    pub(super) fn enabled(&self) -> bool {
        self.wake.is_some()
    }

    /// Gives a connection back to the I/O thread for its next request.
    pub(super) fn give(&self, given: Given) {
        let Some(wake) = &self.wake else { return };
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(given);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from `one` to a descriptor this struct owns.
        unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// The connections given back since the last call (the wake-up consumed).
    pub(super) fn take(&self) -> Vec<Given> {
        if let Some(wake) = &self.wake {
            let mut count = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `count` from a descriptor this struct owns.
            unsafe { libc::read(wake.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Whether the connection of `request`, its `served`th, may carry another request after the
/// answer: HTTP/1.1 without `Connection: close`, and not past [`MAX_REQUESTS`].
pub(super) fn may_keep(request: &Request, served: u32) -> bool {
    let close = request
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .any(|(_, v)| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("close")));
    !request.http10 && !close && served < MAX_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(http10: bool, headers: &[(&str, &str)]) -> Request {
        Request {
            http10,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Request::default()
        }
    }

    #[test]
    fn http_1_1_keeps_its_connection_unless_it_asks_to_close_or_has_carried_enough() {
        assert!(may_keep(&request(false, &[("Host", "x")]), 1));
        assert!(!may_keep(&request(true, &[]), 1), "HTTP/1.0");
        assert!(!may_keep(&request(false, &[("connection", "Upgrade, CLOSE")]), 1));
        assert!(may_keep(&request(false, &[("Connection", "keep-alive")]), MAX_REQUESTS - 1));
        assert!(!may_keep(&request(false, &[]), MAX_REQUESTS), "the last one closes");
    }

    #[test]
    fn a_connection_given_back_wakes_the_reader_and_is_taken_once() {
        let kept = Kept::new();
        let fd = kept.fd().expect("an eventfd");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        kept.give(Given { stream, peer: IpAddr::from([127, 0, 0, 1]), served: 3, blocking: false });
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 1000) }, 1, "woken");
        let given = kept.take();
        assert_eq!(given.len(), 1);
        assert_eq!(given[0].served, 3);
        poll.revents = 0;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 0) }, 0, "the wake-up is consumed");
        assert!(kept.take().is_empty());
    }
}
