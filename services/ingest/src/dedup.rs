//! Remembers delivery ids for a window, in bounded memory, so a redelivered webhook is
//! answered "duplicate" instead of being published twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A time-windowed set of delivery ids with a size cap (oldest forgotten first).
pub struct DeliveryLog {
    window: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl DeliveryLog {
    /// Remember ids for `window`, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Whether `id` was recorded within the window.
    pub fn contains(&self, id: &str) -> bool {
        let mut inner = conveyor::sync::lock(&self.inner);
        self.expire(&mut inner);
        inner.seen.contains_key(id)
    }

    /// Record `id` as handled now.
    pub fn record(&self, id: &str) {
        let mut inner = conveyor::sync::lock(&self.inner);
        self.expire(&mut inner);
        let now = Instant::now();
        if inner.seen.insert(id.to_owned(), now).is_none() {
            inner.order.push_back((now, id.to_owned()));
        }
        while inner.order.len() > self.capacity {
            if let Some((_, old)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
    }

    fn expire(&self, inner: &mut Inner) {
        let now = Instant::now();
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, id)) = inner.order.pop_front() {
                inner.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ids_expire_after_the_window_and_capacity_is_bounded() {
        let log = DeliveryLog::new(Duration::from_secs(60), 2);
        log.record("a");
        assert!(log.contains("a"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!log.contains("a"));
        log.record("b");
        log.record("c");
        log.record("d");
        assert!(!log.contains("b"), "oldest forgotten at capacity");
        assert!(log.contains("c") && log.contains("d"));
    }
}
