//! The handler threads: at most `Limits::handlers` requests are handled at once, each on a
//! thread of its own; a thread that finished waits a while for the next request instead of
//! exiting, so a busy receiver does not pay a thread's creation, stack and exit per request
//! (under `wrk -c16`, perf counted `clone3` at 14 % of the receiver's samples, nearly all on
//! the I/O thread that every connection waits for).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long an idle handler thread waits for a request before it exits.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct Handlers {
    limit: usize,
    busy: AtomicUsize,
    pool: Mutex<Pool>,
    ready: Condvar,
}

/// Requests handed to idle threads and not yet taken; never more than the idle threads.
#[derive(Default)]
struct Pool {
    jobs: VecDeque<Job>,
    idle: usize,
}

impl Handlers {
    pub(super) fn new(limit: usize) -> Arc<Handlers> {
        Arc::new(Handlers { limit, busy: AtomicUsize::new(0), pool: Mutex::default(), ready: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a handler's place; false when `limit` requests are being handled.
    pub(super) fn acquire(&self) -> bool {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_turn_reuse_one_thread_and_the_bound_holds() {
        let handlers = Handlers::new(2);
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
}
