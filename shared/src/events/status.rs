//! The closed sets foreign systems report: AWX job statuses, GitHub run statuses and
//! conclusions. Each keeps the wire spelling and has `Unknown` for values added upstream later.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares a wire enum: snake_case on the wire, `Unknown` for anything else, `as_str` and
/// `Display` giving the wire spelling.
macro_rules! wire_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $wire)] $variant,)+
            /// A value this version does not know.
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Unknown => "unknown",
                }
            }
        }

        impl From<&str> for $name {
            fn from(wire: &str) -> Self {
                match wire {
                    $($wire => $name::$variant,)+
                    _ => $name::Unknown,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// An AWX job's status (AWX's `UnifiedJob` status choices), or Conveyor's `stuck`.
    pub enum JobStatus {
        /// Created, not yet queued.
        New = "new",
        /// Waiting for capacity.
        Pending = "pending",
        /// Assigned, about to start.
        Waiting = "waiting",
        /// Running.
        Running = "running",
        /// Ended well.
        Successful = "successful",
        /// A task failed.
        Failed = "failed",
        /// AWX itself failed to run it.
        Error = "error",
        /// Cancelled.
        Canceled = "canceled",
        /// Conveyor's end for a job that stayed pending past its deadline.
        Stuck = "stuck",
    }
}

impl JobStatus {
    /// `successful`, `failed`, `error`, `canceled` (or Conveyor's `stuck`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Successful
                | JobStatus::Failed
                | JobStatus::Error
                | JobStatus::Canceled
                | JobStatus::Stuck
        )
    }

    /// The job can still run (AWX's `CAN_CANCEL`).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::New | JobStatus::Pending | JobStatus::Waiting | JobStatus::Running
        )
    }
}

wire_enum! {
    /// A GitHub Actions workflow run's status.
    pub enum RunStatus {
        /// Asked for, not yet queued.
        Requested = "requested",
        /// Queued.
        Queued = "queued",
        /// Waiting for a concurrency group.
        Pending = "pending",
        /// Waiting for an environment's protection rules.
        Waiting = "waiting",
        /// Running.
        InProgress = "in_progress",
        /// Ended; see its conclusion.
        Completed = "completed",
    }
}

impl RunStatus {
    /// The run has not left the queue yet.
    pub fn not_started(self) -> bool {
        matches!(
            self,
            RunStatus::Queued | RunStatus::Requested | RunStatus::Waiting | RunStatus::Pending
        )
    }
}

wire_enum! {
    /// How a completed GitHub Actions workflow run ended.
    pub enum RunConclusion {
        /// Succeeded.
        Success = "success",
        /// Failed.
        Failure = "failure",
        /// Neither (a check that reports no verdict).
        Neutral = "neutral",
        /// Cancelled.
        Cancelled = "cancelled",
        /// Skipped.
        Skipped = "skipped",
        /// Timed out.
        TimedOut = "timed_out",
        /// Needs someone to act.
        ActionRequired = "action_required",
        /// Superseded by a newer run of the check.
        Stale = "stale",
        /// Could not start.
        StartupFailure = "startup_failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip_and_new_values_are_unknown() {
        for s in [JobStatus::Canceled, JobStatus::Stuck, JobStatus::New] {
            let wire = serde_json::to_string(&s).unwrap();
            assert_eq!(wire, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<JobStatus>(&wire).unwrap(), s);
        }
        assert_eq!(
            serde_json::from_str::<RunStatus>("\"in_progress\"").unwrap(),
            RunStatus::InProgress
        );
        assert_eq!(
            serde_json::from_str::<RunConclusion>("\"timed_out\"").unwrap(),
            RunConclusion::TimedOut
        );
        assert_eq!(
            serde_json::from_str::<JobStatus>("\"approved\"").unwrap(),
            JobStatus::Unknown
        );
        assert!(!JobStatus::Unknown.is_terminal() && !JobStatus::Unknown.is_active());
    }
}
