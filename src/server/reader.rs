//! The I/O thread: one `poll(2)` loop accepts and reads every connection, so a slow or idle
//! client costs a file descriptor and a small buffer, never a thread.

use std::net::{IpAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bounds::Short;
use super::bounds::{self, Budget};
use super::conn::{Conn, Phase, Step, abandon, dispatch, expired, read_ready, refuse, refuse_starved, resume, waiting};
use super::handlers::Handlers;
use super::service::{Limits, Service};

/// Accepts and reads connections until `stop()` is true; complete requests go to
/// `service.handle` on their own threads, which may still be running when this returns: the
/// [`InFlight`] returned waits for them.
pub(crate) fn serve<S: Service>(
    listener: TcpListener,
    limits: Limits,
    service: Arc<S>,
    stop: impl Fn() -> bool,
) -> std::io::Result<InFlight> {
    listener.set_nonblocking(true)?;
    // A deep accept queue: a burst of connections must not drop a fresh one's SYN (a 1 s retry).
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
    let budget = Arc::new(Budget::new(&limits));
    let handlers = Handlers::new(
        limits.handlers,
        (limits.untrusted_handlers, limits.untrusted_handlers_per_client),
        (limits.untrusted_answers, limits.untrusted_answers_per_client),
        limits.answer_timeout,
    );
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop() {
        fds.clear();
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        // A complete request waiting for a handler is not read from (only its hang-up is seen).
        fds.extend(conns.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: if waiting(c).is_some() { 0 } else { libc::POLLIN },
            revents: 0,
        }));
        let wake = handlers.kept.fd();
        if let Some(fd) = wake {
            fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        // Requests waiting for a handler are retried soon; a place frees in the time a handler takes.
        let queued = conns.iter().any(|c| waiting(c).is_some());
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, if queued { 5 } else { 100 }) };
        let now = Instant::now();
        let mut done = vec![false; conns.len()];
        if queued {
            hand_off(&mut conns, &mut done, &fds, &service, &budget, &handlers);
        }
        if ready > 0 {
            for i in 0..conns.len() {
                if fds[i + 1].revents != 0 && !done[i] && waiting(&conns[i]).is_none() {
                    let mut step = read_ready(&mut conns[i], &service, &budget, &handlers, now);
                    // No room for this body: shed readers for it (`body_victim`) while that helps.
                    while let Step::Starved(short) = step {
                        match body_victim(&conns, &done, i, short) {
                            Some(v) => {
                                refuse(&mut conns[v], &*service, &budget, 503);
                                step = resume(&mut conns[i], &service, &budget, &handlers, now);
                            }
                            None => {
                                refuse_starved(&mut conns[i], &*service, &budget);
                                step = Step::Open;
                            }
                        }
                    }
                    done[i] = step == Step::Done;
                }
            }
            shed_heads(&mut conns, &done, &limits, &*service, &budget);
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            if !done[i] {
                done[i] = expired(conn, &limits, &*service, &budget, now);
            }
        }
        let mut i = 0;
        conns.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        if ready > 0 && fds[0].revents != 0 {
            accept_all(&listener, &mut conns, &limits, &*service, &budget);
        }
        if ready > 0 && wake.is_some() && fds.last().is_some_and(|fd| fd.revents != 0) {
            take_back(&handlers, &mut conns, &limits);
        }
    }
    for conn in conns {
        if let Phase::Body { share, .. } = conn.phase {
            budget.release(share);
        }
    }
    Ok(InFlight(handlers))
}

/// The requests still being handled when the server stopped reading.
pub(crate) struct InFlight(Arc<Handlers>);

impl InFlight {
    /// Waits up to `within` for every request being handled to be answered; false when some
    /// still were at the end.
    pub(crate) fn wait(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.0.busy() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Gives waiting anonymous requests the handlers' places that freed, first come first served;
/// drops those whose client hung up.
fn hand_off<S: Service>(
    conns: &mut [Conn],
    done: &mut [bool],
    fds: &[libc::pollfd],
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<Handlers>,
) {
    let mut queue: Vec<(Instant, usize)> =
        conns.iter().enumerate().filter_map(|(i, c)| waiting(c).map(|since| (since, i))).collect();
    queue.sort();
    for (_, i) in queue {
        if fds[i + 1].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            abandon(&conns[i], budget);
            done[i] = true;
            continue;
        }
        match dispatch(&mut conns[i], service, budget, handlers) {
            Step::Done => done[i] = true,
            _ if waiting(&conns[i]).is_some() => return,
            _ => {}
        }
    }
}

/// The body reader to shed so that `conns[starved]`'s body fits: an anonymous one first, of
/// its own address when that address is at its cap, else the oldest of the address holding
/// the most anonymous bytes. For a trusted body when no anonymous one is being read, the
/// oldest trusted reader of the address holding the most trusted bytes, when that is more than
/// the starved request's address holds: whoever holds a token cannot keep the budget from
/// another's request by declaring long bodies and sending them slowly. `None` when there is
/// nothing to shed (what handlers hold cannot be shed, and that is bounded by the handlers).
fn body_victim(conns: &[Conn], done: &[bool], starved: usize, short: Short) -> Option<usize> {
    let others =
        || conns.iter().enumerate().filter(move |(i, _)| *i != starved && !done.get(*i).copied().unwrap_or(false));
    let readers = others().filter_map(|(i, c)| c.anonymous_share().map(|(ip, bytes, since)| (i, ip, bytes, since)));
    let ip = match short {
        Short::Address => Some(conns[starved].peer),
        Short::Total => bounds::busiest(readers.clone().map(|(_, ip, bytes, _)| (ip, bytes))),
    };
    if let Some(victim) = ip.and_then(|ip| bounds::oldest_of(readers.map(|(i, ip, _, since)| (i, ip, since)), ip)) {
        return Some(victim);
    }
    if !conns[starved].starved_trusted() {
        return None;
    }
    let trusted = others().filter_map(|(i, c)| c.trusted_share().map(|(ip, bytes, since)| (i, ip, bytes, since)));
    let held =
        |ip: IpAddr| trusted.clone().filter(|(_, a, _, _)| *a == ip).map(|(_, _, bytes, _)| bytes).sum::<usize>();
    let busiest = bounds::busiest(trusted.clone().map(|(_, ip, bytes, _)| (ip, bytes)))?;
    if held(busiest) <= held(conns[starved].peer) {
        return None;
    }
    bounds::oldest_of(trusted.map(|(i, ip, _, since)| (i, ip, since)), busiest)
}

/// Keeps the memory of unparsed heads within its bound by shedding the oldest head reader of
/// the address holding the most head bytes.
fn shed_heads<S: Service>(conns: &mut [Conn], done: &[bool], limits: &Limits, service: &S, budget: &Budget) {
    let mut held: usize = conns.iter().map(Conn::head_bytes).sum();
    while held > limits.head_memory {
        let heads = conns
            .iter()
            .enumerate()
            .filter(|(i, c)| !done[*i] && c.head_bytes() > 0)
            .map(|(i, c)| (i, c.peer, c.accepted));
        let Some(ip) =
            bounds::busiest(conns.iter().enumerate().filter(|(i, _)| !done[*i]).map(|(_, c)| (c.peer, c.head_bytes())))
        else {
            return;
        };
        let Some(v) = bounds::oldest_of(heads, ip) else { return };
        held -= conns[v].head_bytes();
        refuse(&mut conns[v], service, budget, 503);
    }
}

/// Reads the connections handlers gave back again, each for its next request, as far as the
/// bound on connections lets (one past it is closed: it waits for nothing yet).
fn take_back(handlers: &Handlers, conns: &mut Vec<Conn>, limits: &Limits) {
    for given in handlers.kept.take() {
        if conns.len() < limits.connections && (!given.blocking || given.stream.set_nonblocking(true).is_ok()) {
            conns.push(Conn::kept(given));
        }
    }
}

/// Connections accepted per turn of the loop: between turns the waiting input is read, so a
/// burst of new connections meets requests that arrived whole already read.
const ACCEPT_BATCH: usize = 16;

/// Accepts what is waiting, shedding a connection being read at a bound ([`bounds::victim`]).
fn accept_all<S: Service>(
    listener: &TcpListener,
    conns: &mut Vec<Conn>,
    limits: &Limits,
    service: &S,
    budget: &Budget,
) {
    for _ in 0..ACCEPT_BATCH {
        let (stream, addr) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Bounds count per client (an IPv6 /64), and the service sees the same.
        let peer = bounds::client(addr.ip());
        let readers = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| !matches!(c.phase, Phase::Linger { .. }))
            .map(|(i, c)| (i, c.peer, c.accepted));
        if let Some(i) = bounds::victim(readers, peer, limits) {
            refuse(&mut conns[i], service, budget, 503);
        }
        // Lingering connections count against the descriptors too: drop the oldest beyond twice the bound.
        if conns.len() >= 2 * limits.connections
            && let Some(i) = conns.iter().position(|c| matches!(c.phase, Phase::Linger { .. }))
        {
            conns.swap_remove(i);
        }
        conns.push(Conn::new(stream, peer));
    }
}
