//! The one retry policy: exponential backoff with jitter, a cap and a total budget, honouring a
//! server's `Retry-After`. Every HTTP client and the broker reconnect loop use it.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use time::OffsetDateTime;

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// Worth trying again (network, 5xx, 429); `Some` carries the server's requested wait.
    Transient(Option<Duration>),
    /// Will not change by trying again (4xx, invalid input).
    Permanent,
}

/// Errors that know whether they are worth retrying.
pub trait Classify {
    /// Transient or permanent, with the server's requested wait if any.
    fn transience(&self) -> Transience;
}

/// Shape of a backoff: first delay, factor, cap, maximum attempts and total budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// First delay.
    pub min_delay: Duration,
    /// Growth factor per attempt.
    pub factor: f32,
    /// Longest single delay.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// Total time spent sleeping before giving up.
    pub max_elapsed: Option<Duration>,
}

impl Policy {
    /// For calls to external APIs inside one delivery: short, so that longer waits go through
    /// the broker's delayed redelivery instead of holding a delivery open.
    pub const HTTP: Policy = Policy {
        min_delay: Duration::from_millis(200),
        factor: 2.0,
        max_delay: Duration::from_secs(10),
        max_retries: 5,
        max_elapsed: Some(Duration::from_secs(60)),
    };

    /// For reconnecting to the broker: keeps trying, never faster than 100 ms, never slower than 10 s.
    pub const RECONNECT: Policy = Policy {
        min_delay: Duration::from_millis(100),
        factor: 2.0,
        max_delay: Duration::from_secs(10),
        max_retries: usize::MAX,
        max_elapsed: None,
    };

    /// For a transient failure handed back to the broker ([`crate::bus::Outcome::failure`]):
    /// the wait before the next delivery doubles from 1 s to 2 min, so that eight attempts
    /// span about four minutes, long enough for a restarted API or database.
    pub const REDELIVERY: Policy = Policy {
        min_delay: Duration::from_secs(1),
        factor: 2.0,
        max_delay: Duration::from_secs(120),
        max_retries: usize::MAX,
        max_elapsed: None,
    };

    /// The delay after failed attempt `attempt` (1 for the first), without jitter: the
    /// broker's delay tiers round it anyway.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let scaled = self.min_delay.as_secs_f64() * f64::from(self.factor).powi(exponent);
        Duration::from_secs_f64(scaled.min(self.max_delay.as_secs_f64()))
    }

    /// A backon builder for this policy (with jitter).
    pub fn builder(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::new()
            .with_jitter()
            .with_factor(self.factor)
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_total_delay(self.max_elapsed);
        if self.max_retries == usize::MAX {
            b.without_max_times()
        } else {
            b.with_max_times(self.max_retries)
        }
    }

    /// An iterator of delays for hand-driven loops (the reconnect supervisor).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.builder().build()
    }

    /// Run `op` until it succeeds or `cancel` fires (then `None`), waiting this policy's
    /// delays between attempts — for what must not be given up on (a fact a follow saw, a
    /// hold it raised) — and logging each failure as `what … failed; retrying`.
    pub async fn until_done<T, E, F, Fut>(
        &self,
        what: &str,
        cancel: &tokio_util::sync::CancellationToken,
        mut op: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut delays = self.delays();
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} failed; retrying");
                    let wait = delays.next().unwrap_or(self.max_delay);
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Run `op` until it succeeds, fails permanently, or the policy is exhausted. A transient
    /// error that names a wait (Retry-After) is retried after that wait instead of the
    /// computed delay, provided it fits in `max_delay × 6` (a server asking for an hour is
    /// better served by the broker's delayed redelivery than by a sleeping task).
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + std::fmt::Display,
    {
        let longest = self.max_delay * 6;
        op.retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(|e: &E| match e.transience() {
                Transience::Permanent => false,
                Transience::Transient(Some(wait)) => wait <= longest,
                Transience::Transient(None) => true,
            })
            .adjust(|e: &E, computed| match e.transience() {
                Transience::Transient(Some(wait)) => Some(wait),
                _ => computed,
            })
            .notify(|e: &E, wait| tracing::debug!(error = %e, ?wait, "retrying"))
            .await
    }
}

/// Parse an HTTP `Retry-After` value: delay-seconds or an HTTP date (RFC 7231 §7.1.3).
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::format_description::well_known::Rfc2822;
    let when = OffsetDateTime::parse(&value.replace("GMT", "+0000"), &format).ok()?;
    let delta = when - now;
    Some(if delta.is_negative() {
        Duration::ZERO
    } else {
        delta.unsigned_abs()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use time::macros::datetime;

    #[derive(Debug)]
    struct E(Transience);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl Classify for E {
        fn transience(&self) -> Transience {
            self.0
        }
    }

    #[test]
    fn redelivery_doubles_up_to_its_cap() {
        let p = Policy::REDELIVERY;
        let secs: Vec<u64> = (1..=9).map(|a| p.delay_after(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 120, 120]);
        assert_eq!(p.delay_after(0), Duration::from_secs(1));
        assert_eq!(p.delay_after(u32::MAX), Duration::from_secs(120));
    }

    #[test]
    fn retry_after_forms() {
        let now = datetime!(2026-11-27 12:00:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_retry_after_is_honoured() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out: Result<u32, E> = Policy::HTTP
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    Err(E(Transience::Transient(Some(Duration::from_secs(42)))))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 1);
        // The paused clock advanced exactly by the server's wait, not by the policy's 200 ms.
        assert_eq!(start.elapsed(), Duration::from_secs(42));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let out: Result<(), E> = Policy::HTTP
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(Transience::Permanent))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded() {
        let calls = AtomicU32::new(0);
        let out: Result<(), E> = Policy::HTTP
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(Transience::Transient(None)))
            })
            .await;
        assert!(out.is_err());
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=6).contains(&n), "{n} calls");
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let delays: Vec<Duration> = Policy::RECONNECT.delays().take(20).collect();
        assert_eq!(delays.len(), 20);
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        assert!(delays[10] > delays[0]);
    }
}
