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
    /// It is a rollback: a remediation, not a change (trigger `rollback`).
    pub rollback: bool,
    /// A later rollback replaced it: the change went bad after it completed.
    pub rolled_back: bool,
}

/// The four keys of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    /// Environment.
    pub environment: String,
    /// Window, in days, ending now.
    pub days: u32,
    /// Changes completed in the window (rollbacks are remediations, not changes).
    pub deployments: usize,
    /// Changes completed per day.
    pub deployment_frequency_per_day: f64,
    /// Median of (completed − earliest commit time) over completed changes, seconds.
    pub lead_time_seconds: Option<f64>,
    /// (failed + completed-but-stalled + completed-then-rolled-back) / (completed + failed)
    /// changes; superseded ones never ran.
    pub change_failure_rate: Option<f64>,
    /// Median of (next good completion − start of the breakage), seconds. A breakage starts at
    /// a failure, or at the completion of a change later rolled back; it ends at the next
    /// completion that was not rolled back itself (the rollback, or a fix).
    pub time_to_restore_seconds: Option<f64>,
    /// Failed changes in the window.
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
    let changes = window.iter().filter(|o| !o.rollback);
    let completed: Vec<&Outcome> = changes
        .clone()
        .filter(|o| o.status == Status::Completed)
        .collect();
    let failures = changes.filter(|o| o.status == Status::Failed).count();
    let bad = failures
        + completed
            .iter()
            .filter(|o| o.stalled || o.rolled_back)
            .count();
    let lead = completed
        .iter()
        .filter_map(|o| Some(o.finished_at? - o.commit_at?))
        .filter(|d| *d >= 0)
        .collect();
    // A breakage starts at its first failure (or bad completion) and ends at the next good
    // completion.
    let mut restores = Vec::new();
    let mut broken_since: Option<Millis> = None;
    for o in &ended {
        let broke = o.status == Status::Failed || o.rolled_back;
        match (broke, broken_since) {
            (true, None) => broken_since = o.finished_at,
            (false, Some(since_failure)) if o.status == Status::Completed => {
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
            rollback: false,
            rolled_back: false,
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
                rollback: false,
                rolled_back: false,
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
    fn a_rollback_is_a_remediation_and_what_it_replaced_a_failure() {
        // Completed at -10 h, rolled back at -8 h (old commit); a change failed at -5 h and was
        // rolled back automatically at -4.5 h; a fix completed at -1 h.
        let outcomes = [
            Outcome {
                rolled_back: true,
                ..o(Status::Completed, 10, Some(11), false)
            },
            Outcome {
                rollback: true,
                ..o(Status::Completed, 8, Some(500), false)
            },
            Outcome {
                rolled_back: true,
                ..o(Status::Failed, 5, None, false)
            },
            Outcome {
                rollback: true,
                ..o(Status::Completed, 4, Some(500), false)
            },
            o(Status::Completed, 1, Some(2), false),
        ];
        let d = compute("production", &outcomes, NOW, 7);
        assert_eq!(d.deployments, 2, "the rollbacks are not changes");
        // Lead times 1 h and 1 h: the rollbacks' old commits do not count.
        assert_eq!(d.lead_time_seconds, Some(3600.0));
        // The rolled-back completion and the failure, of three changes.
        assert_eq!(d.change_failure_rate, Some(2.0 / 3.0));
        assert_eq!(d.failures, 1);
        // Broken from -10 h to the rollback at -8 h, and from -5 h to the rollback at -4 h.
        assert_eq!(d.time_to_restore_seconds, Some(1.5 * 3600.0));
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
