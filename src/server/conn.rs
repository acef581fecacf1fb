//! One connection's one request: the head read and parsed, the service's decision from the
//! head before any body byte is read, the body read within the shared budget and its deadline,
//! then the hand-off to a bounded handler thread, which gives the connection back for its next
//! request when HTTP/1.1 lets it (`kept`); an answer the server gives on its own lingers so it
//! is not lost to a reset.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bounds::{Budget, Share, Short};
use super::handlers::Handlers;
use super::kept::{Given, may_keep};
use super::request::{MAX_HEAD, Request, content_length, parse_head};
use super::response::Response;
use super::service::{Admit, Limits, Service};

/// How long a refused connection's unread input is still drained after the answer, so the
/// answer is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Where a connection is in its one request.
pub(super) enum Phase {
    Head,
    /// The head is parsed and the body may be read, but the budget has no room for it yet:
    /// the reader sheds an anonymous reader to make room, or refuses this one.
    Starved {
        request: Request,
        head: usize,
        share: Share,
        short: Short,
    },
    Body {
        request: Request,
        length: usize,
        share: Share,
        since: Instant,
    },
    /// Complete and anonymous, waiting for a place in the anonymous share of the handlers
    /// (first come, first served); its body still counts against the budget.
    Ready {
        request: Request,
        share: Share,
        since: Instant,
    },
    /// Answered; unread input is drained until `until` so the answer is not reset away.
    Linger {
        until: Instant,
        drained: usize,
    },
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: IpAddr,
    /// When it was accepted, or given back for its next request.
    pub(super) accepted: Instant,
    buf: Vec<u8>,
    pub(super) phase: Phase,
    /// Requests this connection carried before the one being read.
    served: u32,
    /// Bytes arrived past the request being read (a pipelined next request): the connection
    /// is closed after this answer rather than kept.
    pipelined: bool,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, peer: IpAddr) -> Conn {
        Conn {
            stream,
            peer,
            accepted: Instant::now(),
            buf: Vec::new(),
            phase: Phase::Head,
            served: 0,
            pipelined: false,
        }
    }

    /// A connection a handler gave back, waiting for its next request.
    pub(super) fn kept(given: Given) -> Conn {
        Conn { served: given.served, ..Conn::new(given.stream, given.peer) }
    }

    /// A kept connection with nothing of its next request yet: closed without an answer when
    /// its time runs out or a bound sheds it.
    fn idle_kept(&self) -> bool {
        self.served > 0 && matches!(self.phase, Phase::Head) && self.buf.is_empty()
    }

    /// Bytes held for an unparsed head.
    pub(super) fn head_bytes(&self) -> usize {
        if matches!(self.phase, Phase::Head) { self.buf.capacity() } else { 0 }
    }

    /// The share of the budget an anonymous body being read holds (shedding it frees that).
    pub(super) fn anonymous_share(&self) -> Option<(IpAddr, usize, Instant)> {
        match &self.phase {
            Phase::Body { share, since, .. } | Phase::Ready { share, since, .. } if !share.trusted => {
                Some((share.peer, share.bytes, *since))
            }
            _ => None,
        }
    }

    /// The share of the budget a trusted body being read holds.
    pub(super) fn trusted_share(&self) -> Option<(IpAddr, usize, Instant)> {
        match &self.phase {
            Phase::Body { share, since, .. } if share.trusted => Some((share.peer, share.bytes, *since)),
            _ => None,
        }
    }

    /// Whether this connection waits for room for a trusted body.
    pub(super) fn starved_trusted(&self) -> bool {
        matches!(&self.phase, Phase::Starved { share, .. } if share.trusted)
    }
}

/// What became of a connection after a read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Step {
    /// Still being read (or lingering).
    Open,
    /// Finished with: closed, or handed to a handler.
    Done,
    /// Its body has no room in the budget: shed someone and [`resume`], or refuse it.
    Starved(Short),
}

/// Releases what a connection holds of the budget.
fn release(conn: &Conn, budget: &Budget) {
    if let Phase::Body { share, .. } | Phase::Ready { share, .. } = conn.phase {
        budget.release(share);
    }
}

/// When a complete anonymous request began waiting for a handler, if it is.
pub(super) fn waiting(conn: &Conn) -> Option<Instant> {
    match conn.phase {
        Phase::Ready { since, .. } => Some(since),
        _ => None,
    }
}

/// Drops a waiting request whose client went away; what it held goes back to the budget.
pub(super) fn abandon(conn: &Conn, budget: &Budget) {
    release(conn, budget);
}

/// Tries again to reserve a starved connection's body, then goes on reading it.
pub(super) fn resume<S: Service>(
    conn: &mut Conn,
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<Handlers>,
    now: Instant,
) -> Step {
    let Phase::Starved { request, head, share, .. } = std::mem::replace(&mut conn.phase, Phase::Head) else {
        return Step::Open;
    };
    if let Err(short) = budget.reserve(share) {
        conn.phase = Phase::Starved { request, head, share, short };
        return Step::Starved(short);
    }
    conn.pipelined = conn.buf.len() > head + share.bytes;
    conn.buf.drain(..head);
    conn.buf.truncate(share.bytes);
    conn.buf.reserve_exact(share.bytes - conn.buf.len());
    conn.phase = Phase::Body { request, length: share.bytes, share, since: now };
    if conn.buf.len() >= share.bytes {
        return dispatch(conn, service, budget, handlers);
    }
    read_ready(conn, service, budget, handlers, now)
}

/// Refuses a connection the budget had no room for.
pub(super) fn refuse_starved<S: Service>(conn: &mut Conn, service: &S, budget: &Budget) {
    if let Phase::Starved { request, share, .. } = std::mem::replace(&mut conn.phase, Phase::Head) {
        let share = Share { bytes: 0, ..share };
        conn.phase = Phase::Body { request, length: 0, share, since: Instant::now() };
    }
    refuse(conn, service, budget, 503);
}

/// Reads what the connection has.
pub(super) fn read_ready<S: Service>(
    conn: &mut Conn,
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<Handlers>,
    now: Instant,
) -> Step {
    let service_ref = &**service;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let want = match &conn.phase {
            Phase::Head => (MAX_HEAD + 1).saturating_sub(conn.buf.len()),
            Phase::Body { length, .. } => length.saturating_sub(conn.buf.len()),
            Phase::Linger { .. } => chunk.len(),
            Phase::Starved { short, .. } => return Step::Starved(*short),
            Phase::Ready { .. } => return Step::Open,
        }
        .clamp(1, chunk.len());
        let n = match conn.stream.read(&mut chunk[..want]) {
            Ok(0) => {
                release(conn, budget);
                return Step::Done;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Open,
            Err(_) => {
                release(conn, budget);
                return Step::Done;
            }
        };
        if let Phase::Linger { drained, .. } = &mut conn.phase {
            *drained += n;
            if *drained > LINGER_BYTES {
                return Step::Done;
            }
            continue;
        }
        // Exactly what arrived: a head's buffer is what the head-memory bound counts.
        conn.buf.reserve_exact(n);
        conn.buf.extend_from_slice(&chunk[..n]);
        if matches!(conn.phase, Phase::Head) {
            match parse_head(&conn.buf) {
                Ok(None) if conn.buf.len() > MAX_HEAD => {
                    refuse(conn, service_ref, budget, 431);
                    return Step::Open;
                }
                Ok(None) => continue,
                Err(status) => {
                    refuse(conn, service_ref, budget, status);
                    return Step::Open;
                }
                Ok(Some((request, len))) => {
                    let (limit, trusted) = match service_ref.admit(&request, conn.peer) {
                        Admit::Answer(response) => {
                            answer(conn, &response);
                            return Step::Open;
                        }
                        Admit::Body(limit) => (limit, false),
                        Admit::Trusted(limit) => (limit, true),
                    };
                    // parse_head checked the framing already.
                    let length = content_length(&request).unwrap_or(0);
                    let share = Share { bytes: 0, peer: conn.peer, trusted };
                    if length > limit {
                        conn.phase = Phase::Body { request, length: 0, share, since: now };
                        refuse(conn, service_ref, budget, 413);
                        return Step::Open;
                    }
                    let share = Share { bytes: length as usize, ..share };
                    conn.phase = Phase::Starved { request, head: len, share, short: Short::Total };
                    return resume(conn, service, budget, handlers, now);
                }
            }
        }
        if let Phase::Body { length, .. } = conn.phase
            && conn.buf.len() >= length
        {
            return dispatch(conn, service, budget, handlers);
        }
    }
}

/// Answers `408` to a connection past its deadline, and closes lingering ones; true when done.
pub(super) fn expired<S: Service>(
    conn: &mut Conn,
    limits: &Limits,
    service: &S,
    budget: &Budget,
    now: Instant,
) -> bool {
    let late = match &conn.phase {
        // Complete, but never given a handler: the server's fault, not the client's.
        Phase::Ready { since, .. } if now.duration_since(*since) >= limits.body_timeout => {
            refuse(conn, service, budget, 503);
            return false;
        }
        // An idle kept connection is closed without a word: a client may be sending on it.
        Phase::Head if conn.idle_kept() => return now.duration_since(conn.accepted) >= limits.head_timeout,
        Phase::Head | Phase::Starved { .. } => now.duration_since(conn.accepted) >= limits.head_timeout,
        Phase::Body { since, .. } | Phase::Ready { since, .. } => now.duration_since(*since) >= limits.body_timeout,
        Phase::Linger { until, .. } => return now >= *until,
    };
    if late {
        refuse(conn, service, budget, 408);
    }
    false
}

/// Answers with a bare status on the server's own behalf, reports it, and lingers; an idle
/// kept connection is closed instead, without an answer (none was asked for).
pub(super) fn refuse<S: Service>(conn: &mut Conn, service: &S, budget: &Budget, status: u16) {
    if conn.idle_kept() {
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        conn.phase = Phase::Linger { until: Instant::now(), drained: 0 };
        return;
    }
    let head = match &conn.phase {
        Phase::Body { request, share, .. } | Phase::Ready { request, share, .. } => {
            budget.release(*share);
            Some(request)
        }
        Phase::Starved { request, .. } => Some(request),
        _ => None,
    };
    service.refused(head, conn.peer, status);
    answer(conn, &Response::empty(status));
}

/// Writes a short answer without blocking and moves the connection to [`Phase::Linger`].
fn answer(conn: &mut Conn, response: &Response) {
    // A short answer fits the socket's send buffer; a client that does not read it loses it.
    // (Answers from the head are never streamed.)
    let _ = conn.stream.write(&response.bytes(false, false));
    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    conn.buf = Vec::new();
    conn.phase = Phase::Linger { until: Instant::now() + LINGER, drained: 0 };
}

/// The largest answer written without a place to send from: it fits a fresh socket's buffer.
const SHORT_ANSWER: usize = 8 * 1024;

/// Each write of an answer may wait this long for the client to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking socket an answer is written to within a deadline: each write waits at most
/// [`WRITE_TIMEOUT`] and none starts past `until`, so a client that reads a little now and then
/// cannot keep its answer going for ever.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Write for Deadline<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the answer took too long to send"));
        }
        self.stream.set_write_timeout(Some(left.min(WRITE_TIMEOUT)))?;
        self.stream.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Hands a complete request to a handler thread; an anonymous one only within the anonymous
/// share of the handlers, waiting its turn ([`Phase::Ready`]) when that is taken. A trusted one
/// is refused with `503` (and lingers) when every handler is busy.
pub(super) fn dispatch<S: Service>(
    conn: &mut Conn,
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<Handlers>,
) -> Step {
    let (mut request, share, since) = match std::mem::replace(&mut conn.phase, Phase::Head) {
        Phase::Body { request, share, .. } => (request, share, Instant::now()),
        Phase::Ready { request, share, since } => (request, share, since),
        other => {
            conn.phase = other;
            return Step::Done;
        }
    };
    if request.body.is_empty() {
        request.body = std::mem::take(&mut conn.buf);
    }
    let served = conn.served + 1;
    let keep = !conn.pipelined && handlers.kept.enabled() && may_keep(&request, served);
    let Some(place) = handlers.admit(share.trusted, conn.peer) else {
        if !share.trusted {
            conn.phase = Phase::Ready { request, share, since };
            return Step::Open;
        }
        conn.phase = Phase::Body { request, length: 0, share, since: Instant::now() };
        refuse(conn, &**service, budget, 503);
        return Step::Open;
    };
    let Ok(stream) = conn.stream.try_clone() else {
        drop(place);
        conn.phase = Phase::Body { request, length: 0, share, since: Instant::now() };
        refuse(conn, &**service, budget, 503);
        return Step::Open;
    };
    let (svc, held, peer, writers) = (service.clone(), budget.clone(), conn.peer, handlers.clone());
    let started = handlers.run(move || {
        // The anonymous place bounds the work done before credentials are checked: it is given
        // back as soon as the request proves itself (a token that checks out, a signed body that
        // proves fresh; it may go on to wait for its run) and at the latest once the answer is
        // made. Writing the answer waits on the client, so it is bounded on its own: a client
        // that reads slowly holds one of its address's places to be sent to, never the share a
        // signed request from another address waits for.
        let place = std::cell::Cell::new(Some(place));
        let response = svc.handle(&request, peer, &|| drop(place.take()));
        drop(place.take());
        drop(std::mem::take(&mut request.body));
        held.release(share);
        let sending = if share.trusted || svc.trusted(peer) { Some(None) } else { writers.sending(peer).map(Some) };
        // The socket is non-blocking as the I/O thread reads it; it is made blocking only for
        // what the socket's buffer does not take at once, and made non-blocking again when the
        // connection goes back.
        let mut blocking = false;
        let whole = if request.method == "HEAD" {
            // The head alone: a body after it would be read as the answer to the next request.
            let bytes = response.head_bytes(request.http10, keep);
            (&stream).write(&bytes).is_ok_and(|n| n == bytes.len())
        } else if let Some(_sending) = sending {
            let mut out = Deadline { stream: &stream, until: Instant::now() + writers.answer_timeout };
            let mut block = || {
                blocking = true;
                let _ = stream.set_nonblocking(false);
            };
            if response.stream.is_none() {
                // A whole answer: one write, and the rest (when there is a rest) within the deadline.
                let bytes = response.bytes(request.http10, keep);
                let sent = match (&stream).write(&bytes) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(0),
                    Err(_) => None,
                };
                match sent {
                    Some(n) if n == bytes.len() => true,
                    Some(n) => {
                        block();
                        out.write_all(&bytes[n..]).is_ok()
                    }
                    None => false,
                }
            } else {
                block();
                response.write_to(&mut out, request.http10, keep).is_ok()
            }
        } else {
            // No place to send from: a short whole answer goes out in the one write the socket's
            // buffer takes at once (an error, a `202`), a streamed or long one is refused.
            let bytes = response.bytes(request.http10, keep);
            if response.stream.is_some() || bytes.len() > SHORT_ANSWER {
                drop(response);
                svc.refused(Some(&request), peer, 503);
                let mut busy = Response::empty(503);
                busy.headers.push(("Retry-After".into(), "1".into()));
                let _ = (&stream).write(&busy.bytes(request.http10, false));
                false
            } else {
                (&stream).write(&bytes).is_ok_and(|n| n == bytes.len())
            }
        };
        if keep && whole {
            writers.kept.give(Given { stream, peer, served, blocking });
        } else {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    if !started {
        // Out of threads: the budget must not leak; the connection is dropped.
        budget.release(share);
    }
    Step::Done
}
