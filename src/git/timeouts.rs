//! libgit2's socket timeouts: recorded by the poll, handed to libgit2 only before its first
//! network use (a listing, a fetch, a probe).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The socket timeout libgit2 is given when it first connects, in milliseconds (0: not set).
static TIMEOUT_MILLIS: AtomicU64 = AtomicU64::new(0);

/// Sets libgit2's socket connect and read timeouts (process-wide, before polling). They are
/// handed to libgit2 only when a listing first needs it ([`apply_timeouts`]): initialising
/// libgit2 initialises libssh2 and with it OpenSSL, which a poll of `git://` and plain `http://`
/// remotes never uses.
pub(crate) fn set_timeouts(timeout: Duration) {
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    let _ = TIMEOUT_MILLIS.compare_exchange(0, millis, Ordering::Relaxed, Ordering::Relaxed);
}

/// Hands the timeouts [`set_timeouts`] recorded to libgit2, once: called before each use of
/// libgit2's network (a listing, a fetch, a probe).
pub(super) fn apply_timeouts() {
    static ONCE: Once = Once::new();
    let millis = TIMEOUT_MILLIS.load(Ordering::Relaxed);
    if millis == 0 {
        return;
    }
    let millis = i32::try_from(millis).unwrap_or(i32::MAX);
    ONCE.call_once(|| {
        // SAFETY: called once, before this process's first libgit2 network access.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
        }
    });
}
