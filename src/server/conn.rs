//! One connection's one request: the head read and parsed, the service's decision from the
//! head before any body byte is read, the body read within the shared budget and its deadline,
//! then the hand-off to a bounded handler thread; an answer the server gives on its own
//! lingers so it is not lost to a reset.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bounds::Budget;
use super::handlers::Handlers;
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
    Body {
        request: Request,
        length: usize,
        reserved: usize,
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
    pub(super) accepted: Instant,
    buf: Vec<u8>,
    pub(super) phase: Phase,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, peer: IpAddr) -> Conn {
        Conn { stream, peer, accepted: Instant::now(), buf: Vec::new(), phase: Phase::Head }
    }
}

/// Reads what the connection has; true when it is finished with (closed or handed off).
pub(super) fn read_ready<S: Service>(
    conn: &mut Conn,
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<Handlers>,
    now: Instant,
) -> bool {
    let service_ref = &**service;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let want = match &conn.phase {
            Phase::Head => (MAX_HEAD + 1).saturating_sub(conn.buf.len()),
            Phase::Body { length, .. } => length.saturating_sub(conn.buf.len()),
            Phase::Linger { .. } => chunk.len(),
        }
        .clamp(1, chunk.len());
        let n = match conn.stream.read(&mut chunk[..want]) {
            Ok(0) => {
                if let Phase::Body { reserved, .. } = conn.phase {
                    budget.release(reserved);
                }
                return true;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                if let Phase::Body { reserved, .. } = conn.phase {
                    budget.release(reserved);
                }
                return true;
            }
        };
        if let Phase::Linger { drained, .. } = &mut conn.phase {
            *drained += n;
            if *drained > LINGER_BYTES {
                return true;
            }
            continue;
        }
        conn.buf.extend_from_slice(&chunk[..n]);
        if matches!(conn.phase, Phase::Head) {
            match parse_head(&conn.buf) {
                Ok(None) if conn.buf.len() > MAX_HEAD => {
                    refuse(conn, service_ref, budget, 431);
                    return false;
                }
                Ok(None) => continue,
                Err(status) => {
                    refuse(conn, service_ref, budget, status);
                    return false;
                }
                Ok(Some((request, len))) => {
                    let limit = match service_ref.admit(&request, conn.peer) {
                        Admit::Answer(response) => {
                            answer(conn, &response);
                            return false;
                        }
                        Admit::Body(limit) => limit,
                    };
                    // parse_head checked the framing already.
                    let length = content_length(&request).unwrap_or(0);
                    if length > limit {
                        conn.phase = Phase::Body { request, length: 0, reserved: 0, since: now };
                        refuse(conn, service_ref, budget, 413);
                        return false;
                    }
                    let length = length as usize;
                    if !budget.reserve(length) {
                        conn.phase = Phase::Body { request, length: 0, reserved: 0, since: now };
                        refuse(conn, service_ref, budget, 503);
                        return false;
                    }
                    conn.buf.drain(..len);
                    conn.buf.truncate(length);
                    conn.buf.reserve_exact(length - conn.buf.len());
                    conn.phase = Phase::Body { request, length, reserved: length, since: now };
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
        Phase::Head => now.duration_since(conn.accepted) >= limits.head_timeout,
        Phase::Body { since, .. } => now.duration_since(*since) >= limits.body_timeout,
        Phase::Linger { until, .. } => return now >= *until,
    };
    if late {
        refuse(conn, service, budget, 408);
    }
    false
}

/// Answers with a bare status on the server's own behalf, reports it, and lingers.
pub(super) fn refuse<S: Service>(conn: &mut Conn, service: &S, budget: &Budget, status: u16) {
    let head = match &conn.phase {
        Phase::Body { request, reserved, .. } => {
            budget.release(*reserved);
            Some(request)
        }
        _ => None,
    };
    service.refused(head, conn.peer, status);
    answer(conn, &Response::empty(status));
}

/// Writes a short answer without blocking and moves the connection to [`Phase::Linger`].
fn answer(conn: &mut Conn, response: &Response) {
    // A short answer fits the socket's send buffer; a client that does not read it loses it.
    // (Answers from the head are never streamed.)
    let _ = conn.stream.write(&response.bytes(false));
    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    conn.buf = Vec::new();
    conn.phase = Phase::Linger { until: Instant::now() + LINGER, drained: 0 };
}

/// Hands a complete request to a handler thread; false when it was refused (and lingers).
fn dispatch<S: Service>(conn: &mut Conn, service: &Arc<S>, budget: &Arc<Budget>, handlers: &Arc<Handlers>) -> bool {
    let Phase::Body { mut request, reserved, .. } = std::mem::replace(&mut conn.phase, Phase::Head) else {
        return true;
    };
    request.body = std::mem::take(&mut conn.buf);
    let stream = conn.stream.try_clone();
    let (Ok(mut stream), true) = (stream, handlers.acquire()) else {
        conn.phase = Phase::Body { request, length: 0, reserved, since: Instant::now() };
        refuse(conn, &**service, budget, 503);
        return false;
    };
    let (svc, held, peer) = (service.clone(), budget.clone(), conn.peer);
    let started = handlers.run(move || {
        let response = svc.handle(&request, peer);
        let http10 = request.http10;
        drop(request);
        held.release(reserved);
        let _ = stream.set_nonblocking(false);
        // Per write: a streamed answer to a client that stops reading ends here.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let _ = response.write_to(&mut stream, http10);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    if !started {
        // Out of threads: the budget must not leak; the connection is dropped.
        budget.release(reserved);
    }
    true
}
