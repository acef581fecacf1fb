//! The handler threads: at most `Limits::handlers` requests are handled at once, each on a
//! thread of its own; a thread that finished waits a while for the next request instead of
//! exiting, so a busy receiver does not pay a thread's creation, stack and exit per request
//! (under `wrk -c16`, perf counted `clone3` at 14 % of the receiver's samples, nearly all on
//! the I/O thread that every connection waits for).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::kept::Kept;

/// How long an idle handler thread waits for a request before it exits.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct Handlers {
    limit: usize,
    busy: AtomicUsize,
    /// Places requests not yet authenticated may take while they are handled, in all and per
    /// address.
    untrusted: Bound,
    /// Answers to requests not authenticated that may be written at once (a streamed log, a
    /// page to a slow reader), in all and per address: writing waits on the client, so it
    /// holds a thread but none of the places above.
    sending: Bound,
    /// Time allowed to write one answer.
    pub(super) answer_timeout: Duration,
    /// Connections handlers gave back for their next request.
    pub(super) kept: Kept,
    pool: Mutex<Pool>,
    ready: Condvar,
}

/// A count of places per address and in all.
struct Bound {
    limit: usize,
    per_client: usize,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Bound {
    fn new(limit: usize, per_client: usize) -> Bound {
        Bound { limit, per_client, held: Mutex::default() }
    }

    fn take(&self, peer: IpAddr) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.1.get(&peer).copied().unwrap_or(0);
        if held.0 >= self.limit || mine >= self.per_client {
            return false;
        }
        held.0 += 1;
        *held.1.entry(peer).or_default() += 1;
        true
    }

    fn give(&self, peer: IpAddr) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if let Some(mine) = held.1.get_mut(&peer) {
            *mine -= 1;
            if *mine == 0 {
                held.1.remove(&peer);
            }
        }
    }
}

/// Requests handed to idle threads and not yet taken; never more than the idle threads.
#[derive(Default)]
struct Pool {
    jobs: VecDeque<Job>,
    idle: usize,
}

impl Handlers {
    /// `limit` handlers, `untrusted` of them (per address and in all) for requests not yet
    /// authenticated, and `sending` anonymous answers written at once (per address and in all).
    pub(super) fn new(
        limit: usize,
        untrusted: (usize, usize),
        sending: (usize, usize),
        answer_timeout: Duration,
    ) -> Arc<Handlers> {
        Arc::new(Handlers {
            limit,
            busy: AtomicUsize::new(0),
            untrusted: Bound::new(untrusted.0, untrusted.1),
            sending: Bound::new(sending.0, sending.1),
            answer_timeout,
            kept: Kept::new(),
            pool: Mutex::default(),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests being handled (or handed over and not yet taken by a thread).
    pub(super) fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Takes a handler's place; false when `limit` requests are being handled.
    pub(super) fn acquire(&self) -> bool {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Takes a handler's place for a request from `peer`; one not yet authenticated only
    /// within the anonymous share, so the rest stays open to authenticated requests. The share
    /// is given back when the returned [`Place`] drops (move it into the job).
    pub(super) fn admit(self: &Arc<Self>, trusted: bool, peer: IpAddr) -> Option<Place> {
        if !trusted && !self.untrusted.take(peer) {
            return None;
        }
        let place = Place { handlers: self.clone(), anonymous: (!trusted).then_some(peer), sending: false };
        self.acquire().then_some(place)
    }

    /// A place to write an anonymous request's answer from `peer`, given back on drop; `None`
    /// when that address or all of them have as many answers being written as they may.
    pub(super) fn sending(self: &Arc<Self>, peer: IpAddr) -> Option<Place> {
        self.sending.take(peer).then(|| Place { handlers: self.clone(), anonymous: Some(peer), sending: true })
    }

    /// Runs `job` in the place [`acquire`](Handlers::acquire) took, on an idle thread when
    /// there is one, and frees the place after it; false when no thread could be started (the
    /// place is freed, `job` dropped without running).
    pub(super) fn run(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) -> bool {
        let job: Job = Box::new(job);
        let mut pool = self.lock();
        if pool.idle > pool.jobs.len() {
            pool.jobs.push_back(job);
            drop(pool);
            self.ready.notify_one();
            return true;
        }
        drop(pool);
        let handlers = self.clone();
        let spawned = std::thread::Builder::new()
            .name("pipe-serve-request".into())
            .stack_size(256 * 1024)
            .spawn(move || handlers.work(job));
        if spawned.is_err() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Runs `job`, then the jobs handed to this thread while idle, until it idles for [`IDLE`].
    fn work(&self, mut job: Job) {
        loop {
            job();
            self.busy.fetch_sub(1, Ordering::AcqRel);
            let mut pool = self.lock();
            pool.idle += 1;
            let next = loop {
                if let Some(next) = pool.jobs.pop_front() {
                    break Some(next);
                }
                let (back, waited) = self.ready.wait_timeout(pool, IDLE).unwrap_or_else(|e| e.into_inner());
                pool = back;
                if waited.timed_out() && pool.jobs.is_empty() {
                    break None;
                }
            };
            pool.idle -= 1;
            match next {
                Some(next) => job = next,
                None => return,
            }
        }
    }
}

/// An anonymous request's share of the handlers (or of the answers being written), given
/// back on drop.
pub(super) struct Place {
    handlers: Arc<Handlers>,
    anonymous: Option<IpAddr>,
    sending: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(peer) = self.anonymous else { return };
        if self.sending { self.handlers.sending.give(peer) } else { self.handlers.untrusted.give(peer) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_turn_reuse_one_thread_and_the_bound_holds() {
        let handlers = Handlers::new(2, (2, 2), (2, 2), IDLE);
        let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
        for _ in 0..20 {
            assert!(handlers.acquire());
            let (threads, done) = (threads.clone(), std::sync::mpsc::channel());
            assert!(handlers.run(move || {
                threads.lock().unwrap().insert(std::thread::current().id());
                done.0.send(()).unwrap();
            }));
            done.1.recv().unwrap();
            // The place is freed once the job returned; wait for the thread to idle again.
            while handlers.lock().idle == 0 || handlers.busy.load(Ordering::Acquire) > 0 {
                std::thread::yield_now();
            }
        }
        assert_eq!(threads.lock().unwrap().len(), 1, "one thread served every request");
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        for _ in 0..2 {
            assert!(handlers.acquire());
            let release = release.clone();
            assert!(handlers.run(move || {
                let _ = release.lock().unwrap().recv();
            }));
        }
        assert!(!handlers.acquire(), "two busy of two");
        drop(hold);
    }

    #[test]
    fn anonymous_requests_leave_places_for_authenticated_ones() {
        let handlers = Handlers::new(4, (2, 1), (2, 1), IDLE);
        let (a, b) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]));
        let first = handlers.admit(false, a).expect("one anonymous place for a");
        assert!(handlers.admit(false, a).is_none(), "a's own cap");
        let second = handlers.admit(false, b).expect("b's");
        assert!(handlers.admit(false, IpAddr::from([127, 0, 0, 4])).is_none(), "the anonymous share is taken");
        let trusted = [handlers.admit(true, a), handlers.admit(true, b)];
        assert!(trusted.iter().all(Option::is_some), "the rest is open to authenticated requests");
        assert!(handlers.admit(true, a).is_none(), "four of four");
        drop((first, second, trusted));
        // Run jobs give their place back after the job; these never ran.
        handlers.busy.fetch_sub(4, Ordering::AcqRel);
        assert!(handlers.admit(false, IpAddr::from([127, 0, 0, 4])).is_some(), "given back on drop");
    }

    #[test]
    fn answers_being_written_hold_no_anonymous_place_and_are_bounded_on_their_own() {
        let handlers = Handlers::new(8, (1, 1), (2, 1), IDLE);
        let (a, b, c) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]), IpAddr::from([127, 0, 0, 4]));
        let sending = handlers.sending(a).expect("a's answer");
        assert!(handlers.sending(a).is_none(), "a's own cap");
        let other = handlers.sending(b).expect("b's");
        assert!(handlers.sending(c).is_none(), "every answer place is taken");
        let place = handlers.admit(false, c).expect("the anonymous share is still open");
        drop((sending, other, place));
        assert!(handlers.sending(c).is_some(), "given back on drop");
        handlers.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
