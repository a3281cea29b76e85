//! DORA metrics of one environment over a window, from its deployments: deployment frequency,
//! lead time for changes, change failure rate and time to restore. Pure arithmetic.

use serde::Serialize;

use crate::timeline::{Millis, Status};

/// What DORA needs of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended (in-flight deployments are ignored).
    pub status: Status,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// The earliest commit time it carried.
    pub commit_at: Option<Millis>,
    /// A rollout stall was reported.
    pub stalled: bool,
}

/// The four keys of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    /// Environment.
    pub environment: String,
    /// Window, in days, ending now.
    pub days: u32,
    /// Completed deployments in the window.
    pub deployments: usize,
    /// Completed deployments per day.
    pub deployment_frequency_per_day: f64,
    /// Median of (completed − earliest commit time) over completed deployments, seconds.
    pub lead_time_seconds: Option<f64>,
    /// (failed + completed-but-stalled) / (completed + failed); superseded ones never ran.
    pub change_failure_rate: Option<f64>,
    /// Median of (next completed − first failure of a failing streak), seconds.
    pub time_to_restore_seconds: Option<f64>,
    /// Failed deployments in the window.
    pub failures: usize,
}

fn median(mut values: Vec<Millis>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let m = if n % 2 == 1 {
        values[n / 2] as f64
    } else {
        (values[n / 2 - 1] + values[n / 2]) as f64 / 2.0
    };
    Some(m / 1000.0)
}

/// DORA of `environment` over the `days` before `now`, from its deployments (any order).
pub fn compute(environment: &str, outcomes: &[Outcome], now: Millis, days: u32) -> Dora {
    let since = now - i64::from(days) * 86_400_000;
    let mut ended: Vec<Outcome> = outcomes
        .iter()
        .copied()
        .filter(|o| matches!(o.status, Status::Completed | Status::Failed))
        .filter(|o| o.finished_at.is_some())
        .collect();
    ended.sort_by_key(|o| o.finished_at);
    let in_window = |o: &Outcome| o.finished_at.is_some_and(|f| f >= since && f <= now);
    let window: Vec<Outcome> = ended.iter().copied().filter(in_window).collect();
    let completed: Vec<&Outcome> = window
        .iter()
        .filter(|o| o.status == Status::Completed)
        .collect();
    let failures = window.iter().filter(|o| o.status == Status::Failed).count();
    let bad = failures + completed.iter().filter(|o| o.stalled).count();
    let lead = completed
        .iter()
        .filter_map(|o| Some(o.finished_at? - o.commit_at?))
        .filter(|d| *d >= 0)
        .collect();
    // A failing streak starts at its first failure and ends at the next completion.
    let mut restores = Vec::new();
    let mut broken_since: Option<Millis> = None;
    for o in &ended {
        match (o.status, broken_since) {
            (Status::Failed, None) => broken_since = o.finished_at,
            (Status::Completed, Some(since_failure)) => {
                if let Some(f) = o.finished_at
                    && in_window(o)
                {
                    restores.push(f - since_failure);
                }
                broken_since = None;
            }
            _ => {}
        }
    }
    let all = completed.len() + failures;
    Dora {
        environment: environment.to_owned(),
        days,
        deployments: completed.len(),
        deployment_frequency_per_day: completed.len() as f64 / f64::from(days.max(1)),
        lead_time_seconds: median(lead),
        change_failure_rate: (all > 0).then(|| bad as f64 / all as f64),
        time_to_restore_seconds: median(restores),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;
    const NOW: Millis = 100 * 24 * H;

    fn o(status: Status, finished_h: i64, commit_h: Option<i64>, stalled: bool) -> Outcome {
        Outcome {
            status,
            finished_at: Some(NOW - finished_h * H),
            commit_at: commit_h.map(|c| NOW - c * H),
            stalled,
        }
    }

    #[test]
    fn hand_computed_week() {
        // Within 7 days: completed at -100 h (commit -102 h), failed at -50 h, failed at -49 h,
        // completed at -46 h (commit -50 h, stalled then recovered), completed at -2 h (commit
        // -3 h); outside: completed at -200 h; superseded and in-flight ones do not count.
        let outcomes = [
            o(Status::Completed, 200, Some(201), false),
            o(Status::Completed, 100, Some(102), false),
            o(Status::Failed, 50, None, true),
            o(Status::Failed, 49, None, false),
            o(Status::Completed, 46, Some(50), true),
            o(Status::Completed, 2, Some(3), false),
            o(Status::Superseded, 10, None, false),
            Outcome {
                status: Status::Running,
                finished_at: None,
                commit_at: None,
                stalled: false,
            },
        ];
        let d = compute("production", &outcomes, NOW, 7);
        assert_eq!(d.deployments, 3);
        assert!((d.deployment_frequency_per_day - 3.0 / 7.0).abs() < 1e-9);
        // Lead times 2 h, 4 h, 1 h → median 2 h.
        assert_eq!(d.lead_time_seconds, Some(2.0 * 3600.0));
        // (2 failed + 1 stalled) / (3 completed + 2 failed).
        assert_eq!(d.change_failure_rate, Some(3.0 / 5.0));
        // One streak: first failure at -50 h, restored at -46 h → 4 h.
        assert_eq!(d.time_to_restore_seconds, Some(4.0 * 3600.0));
        assert_eq!(d.failures, 2);
    }

    #[test]
    fn nothing_deployed_means_no_rates() {
        let d = compute("staging", &[], NOW, 30);
        assert_eq!(d.deployments, 0);
        assert_eq!(d.change_failure_rate, None);
        assert_eq!(d.lead_time_seconds, None);
        assert_eq!(d.time_to_restore_seconds, None);
    }
}
