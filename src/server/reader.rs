//! The I/O thread: one `poll(2)` loop accepts and reads every connection, so a slow or idle
//! client costs a file descriptor and a small buffer, never a thread.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use super::bounds::{self, Budget};
use super::conn::{Conn, Phase, expired, read_ready, refuse};
use super::handlers::Handlers;
use super::service::{Limits, Service};

/// Accepts and reads connections until `stop()` is true; complete requests go to
/// `service.handle` on their own threads.
pub(crate) fn serve<S: Service>(
    listener: TcpListener,
    limits: Limits,
    service: Arc<S>,
    stop: impl Fn() -> bool,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    // A deep accept queue: a burst of connections must not drop a fresh one's SYN (a 1 s retry).
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
    let budget = Arc::new(Budget::new(limits.body_memory));
    let handlers = Handlers::new(limits.handlers);
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop() {
        fds.clear();
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.extend(conns.iter().map(|c| libc::pollfd { fd: c.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        let now = Instant::now();
        let mut done = vec![false; conns.len()];
        if ready > 0 {
            for (i, conn) in conns.iter_mut().enumerate() {
                if fds[i + 1].revents != 0 {
                    done[i] = read_ready(conn, &service, &budget, &handlers, now);
                }
            }
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
    }
    for conn in conns {
        if let Phase::Body { reserved, .. } = conn.phase {
            budget.release(reserved);
        }
    }
    Ok(())
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
        let peer = addr.ip();
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
