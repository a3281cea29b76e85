//! The one way a std `Mutex` is taken (the lock policy in `clippy.toml`).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, recovering it if a thread panicked while holding it: the state behind our locks
/// is kept consistent by each critical section (short, no await inside), and one panicked
/// task must not take the whole service down with it.
#[allow(clippy::disallowed_methods)]
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
