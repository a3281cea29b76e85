//! Fences: how long a write sent by a worker that lost its delivery may still land.
//!
//! A redelivery means the previous worker died or lost the broker, perhaps with a write (an
//! AWX launch, a GitHub create) on the wire that the other side commits after we look for it.
//! The worker that gets the redelivery raises a fence for the write's key, lasting as long as
//! the write could still take (its request timeout); a look that finds nothing while the fence
//! stands proves nothing, so the work is deferred — not held, so that a further fault does not
//! catch the delivery open — and looked at again once the fence is down.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::bounded::BoundedMap;

/// Keys fenced at once, at most (the oldest fences are forgotten first).
const FENCED: usize = 4096;

/// Fences by key (an environment, a deployment).
#[derive(Debug)]
pub struct Fences {
    window: Duration,
    until: Mutex<BoundedMap<String, Instant>>,
}

impl Fences {
    /// Fences that stand for `window` (the fenced write's request timeout).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            until: Mutex::new(BoundedMap::new(FENCED)),
        }
    }

    /// Work on `key` was redelivered: its lost worker may still have a write on the wire.
    pub fn raise(&self, key: &str) {
        let until = Instant::now() + self.window;
        self.lock().insert(key.to_owned(), until);
    }

    /// How long writes on `key` must still wait, while its fence stands.
    pub fn remaining(&self, key: &str) -> Option<Duration> {
        let until = *self.lock().get(&key.to_owned())?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoundedMap<String, Instant>> {
        crate::sync::lock(&self.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fence_stands_for_its_window_per_key() {
        let fences = Fences::new(Duration::from_secs(15));
        assert_eq!(fences.remaining("staging"), None, "nothing raised");
        fences.raise("staging");
        assert_eq!(fences.remaining("staging"), Some(Duration::from_secs(15)));
        assert_eq!(fences.remaining("production"), None, "per key");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(fences.remaining("staging"), Some(Duration::from_secs(5)));
        fences.raise("staging");
        assert_eq!(
            fences.remaining("staging"),
            Some(Duration::from_secs(15)),
            "a second redelivery raises it again"
        );
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(fences.remaining("staging"), None, "down after its window");
    }
}
