//! The one definition of exchanges, queues, bindings and retry tiers, declared by every service.

use std::collections::BTreeMap;
use std::time::Duration;

use super::partition::{PartitionBy, Partitioning};

/// How many partitions a partitioned stage has unless configured (`CONVEYOR_PARTITIONS`):
/// one, two or four replicas of a stage share them evenly.
pub const DEFAULT_PARTITIONS: u16 = 4;

/// Queue name suffixes of the services (the full name is `<namespace>.<suffix>`).
pub mod queues {
    /// build-trigger: pushes, builds and image pushes.
    pub const BUILD_TRIGGER: &str = "build-trigger.events";
    /// awx-launcher: deployment requests for its environments.
    pub const AWX_LAUNCHER_REQUESTS: &str = "awx-launcher.requests";
    /// awx-launcher: jobs it follows, and AWX notifications.
    pub const AWX_LAUNCHER_JOBS: &str = "awx-launcher.jobs";
    /// build-trigger's journal of its dispatches (`build.requested`): which run continues which
    /// chain, for a replica that did not dispatch it or a process that restarted since.
    pub const BUILD_TRIGGER_DISPATCHES: &str = "build-trigger.dispatches";
    /// rollout-watcher: launched and finished deployments to follow.
    pub const ROLLOUT_WATCHER: &str = "rollout-watcher.deployments";
    /// ledger: every event.
    pub const LEDGER: &str = "ledger.events";
    /// notifier, GitHub channel: deployment events (Deployments API and commit statuses).
    pub const NOTIFIER_GITHUB: &str = "notifier.github";
    /// notifier, Slack channel: deployment events.
    pub const NOTIFIER_SLACK: &str = "notifier.slack";
    /// notifier, generic webhook channel: deployment and rollout events.
    pub const NOTIFIER_WEBHOOK: &str = "notifier.webhook";
    /// The journal of completed deployments (`deploy.completed.*`): what ran last where, for an
    /// automatic rollback and for environments that require another to have completed first.
    pub const DEPLOY_COMPLETIONS: &str = "deploy-completions";
}

/// A durable quorum queue and the routing-key patterns bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDef {
    /// Full queue name.
    pub name: String,
    /// Topic patterns (`*` one segment, `#` zero or more).
    pub bindings: Vec<String>,
    /// Only one consumer at a time receives deliveries (`x-single-active-consumer`); the
    /// others wait as hot standbys. For services whose decisions must be serialised.
    pub single_active: bool,
    /// Split into partition queues by a key (each single-active), so that different keys are
    /// handled by different replicas at once and one key by one replica at a time.
    pub partitioning: Option<Partitioning>,
}

impl QueueDef {
    /// Whether it is split into more than one partition queue.
    pub fn partitioned(&self) -> Option<&Partitioning> {
        self.partitioning.as_ref().filter(|p| p.count > 1)
    }

    /// The queue of partition `i` (`<name>.p<i>`); the queue itself when not partitioned.
    pub fn partition_queue(&self, i: u16) -> String {
        match self.partitioned() {
            Some(_) => format!("{}.p{i}", self.name),
            None => self.name.clone(),
        }
    }

    /// Every queue messages for it land in: its partition queues, or itself.
    pub fn physical_queues(&self) -> Vec<String> {
        match self.partitioned() {
            Some(p) => (0..p.count).map(|i| self.partition_queue(i)).collect(),
            None => vec![self.name.clone()],
        }
    }

    /// The headers exchange that routes its messages to their partitions.
    pub fn partition_exchange(&self) -> String {
        format!("{}.partitions", self.name)
    }

    /// Where its headers exchange sends a message that names no partition (to partition 0).
    pub fn unrouted_exchange(&self) -> String {
        format!("{}.unrouted", self.name)
    }

    /// The header a publisher names its partition in. No `x-` prefix: a headers exchange
    /// ignores those when matching.
    pub fn partition_header(&self) -> String {
        format!("conveyor-partition-{}", self.name)
    }
}

/// A journal: a bounded queue nobody consumes, bound to some events, read without taking
/// anything ([`crate::Bus::journal`]). The oldest entries make room for new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalDef {
    /// Full queue name.
    pub name: String,
    /// Topic patterns.
    pub bindings: Vec<String>,
    /// Entries kept.
    pub max_length: u32,
}

/// Everything declared on the broker for one Conveyor installation.
///
/// All names derive from `namespace` (the exchange name, default `conveyor`), so an isolated
/// test, or a second installation on the same broker, only needs another namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The topic exchange name and the prefix of every queue.
    pub namespace: String,
    /// Service queues.
    pub queues: Vec<QueueDef>,
    /// Journals.
    pub journals: Vec<JournalDef>,
    /// Delayed-redelivery tiers, ascending.
    pub retry_tiers: Vec<Duration>,
    /// Deliveries of one message before the broker itself dead-letters it (a handler that
    /// crashes the process each time must not loop forever).
    pub delivery_limit: u32,
    /// Repository → its group (the repositories `downstream` links), for the stages
    /// partitioned by [`PartitionBy::RepositoryGroup`].
    pub repository_groups: BTreeMap<String, String>,
}

impl Topology {
    /// An empty topology (no service queues) with the default retry tiers.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            queues: Vec::new(),
            journals: Vec::new(),
            retry_tiers: [1, 2, 5, 15, 30, 120, 600]
                .map(Duration::from_secs)
                .to_vec(),
            delivery_limit: 20,
            repository_groups: BTreeMap::new(),
        }
    }

    /// Conveyor's complete topology: every service's queues and bindings, the partitioned
    /// stages with [`DEFAULT_PARTITIONS`] partitions.
    pub fn conveyor(namespace: impl Into<String>) -> Self {
        Self::new(namespace)
            // Coalescing and duplicate suppression compare each event with the ones before it:
            // build-trigger's decisions are serialised per group of linked repositories.
            .with_partitioned_queue(
                queues::BUILD_TRIGGER,
                PartitionBy::RepositoryGroup,
                &[
                    "scm.push",
                    "build.started",
                    "build.succeeded",
                    "build.failed",
                    "image.pushed",
                ],
            )
            // A dispatched run continues its chain on whichever replica sees it finish.
            .with_journal(queues::BUILD_TRIGGER_DISPATCHES, &["build.requested"], 1000)
            // Which deployments completed (and were verified) where: read by the executors'
            // `requires` holds and by the automatic rollback.
            .with_journal(queues::DEPLOY_COMPLETIONS, &["deploy.completed.*"], 1000)
            // Launch decisions (adopt, supersede, busy) are serialised per environment.
            .with_partitioned_queue(
                queues::AWX_LAUNCHER_REQUESTS,
                PartitionBy::Environment,
                &["deploy.requested.*"],
            )
            // Following a job is a deferral loop on its deploy.launched message.
            .with_queue(
                queues::AWX_LAUNCHER_JOBS,
                &["awx.job.*", "deploy.launched.*"],
            )
            // Follows are registered in process: an environment's launches, job ends and the
            // executor's decisions meet on one active consumer.
            .with_partitioned_queue(
                queues::ROLLOUT_WATCHER,
                PartitionBy::Environment,
                &[
                    "deploy.requested.*",
                    "deploy.launched.*",
                    "deploy.job_finished.*",
                    "control.unstick.*",
                ],
            )
            // The ledger reassembles a chain from what it has recorded: one writer at a time
            // per chain keeps two events of one chain from racing.
            .with_partitioned_queue(queues::LEDGER, PartitionBy::Chain, &["#"])
            // One queue per notification channel, so a channel that is down delays only
            // itself; one consumer at a time per deployment, so its reports keep their order.
            .with_partitioned_queue(
                queues::NOTIFIER_GITHUB,
                PartitionBy::Deployment,
                &["deploy.#"],
            )
            .with_partitioned_queue(
                queues::NOTIFIER_SLACK,
                PartitionBy::Deployment,
                &["deploy.#"],
            )
            .with_partitioned_queue(
                queues::NOTIFIER_WEBHOOK,
                PartitionBy::Deployment,
                &["deploy.#", "rollout.#"],
            )
            .with_partitions(DEFAULT_PARTITIONS)
    }

    /// Add a queue `<namespace>.<suffix>` bound to `bindings`.
    pub fn with_queue(mut self, suffix: &str, bindings: &[&str]) -> Self {
        self.queues.push(QueueDef {
            name: self.queue(suffix),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            single_active: false,
            partitioning: None,
        });
        self
    }

    /// Add a queue like [`Topology::with_single_active_queue`] that is split into partitions
    /// by `by` (as many as [`Topology::with_partitions`] says; one until then).
    pub fn with_partitioned_queue(
        mut self,
        suffix: &str,
        by: PartitionBy,
        bindings: &[&str],
    ) -> Self {
        self = self.with_single_active_queue(suffix, bindings);
        if let Some(q) = self.queues.last_mut() {
            q.partitioning = Some(Partitioning { by, count: 1 });
        }
        self
    }

    /// Give every partitioned stage `count` partitions (every process of an installation must
    /// use the same count: the broker refuses a second declaration that differs).
    pub fn with_partitions(mut self, count: u16) -> Self {
        for q in &mut self.queues {
            if let Some(p) = &mut q.partitioning {
                p.count = count.max(1);
            }
        }
        self
    }

    /// The groups of linked repositories (from the pipeline file), for build-trigger's
    /// partitions.
    pub fn with_repository_groups(mut self, groups: BTreeMap<String, String>) -> Self {
        self.repository_groups = groups;
        self
    }

    /// The partition headers of `envelope`: for each partitioned stage, the partition its key
    /// falls in.
    pub fn partition_headers(&self, envelope: &crate::Envelope) -> Vec<(String, String)> {
        self.queues
            .iter()
            .filter_map(|q| {
                let p = q.partitioned()?;
                let key = super::partition::key(p.by, envelope, &self.repository_groups);
                let partition = super::partition::partition_of(&key, p.count);
                Some((q.partition_header(), partition.to_string()))
            })
            .collect()
    }

    /// The stage whose partition queue is `name`, and the partition.
    pub fn partition_of_queue(&self, name: &str) -> Option<(&QueueDef, u16)> {
        self.queues.iter().find_map(|q| {
            q.partitioned()?;
            let i = name
                .strip_prefix(&q.name)?
                .strip_prefix(".p")?
                .parse()
                .ok()?;
            Some((q, i))
        })
    }

    /// The fanout exchange replicas announce themselves on (partition assignment).
    pub fn members_exchange(&self) -> String {
        self.queue("members")
    }

    /// The queue whose declaration records the partition count (an installation's processes
    /// must agree on it: a different count is refused by the broker).
    pub fn partitions_marker(&self) -> String {
        self.queue("partitions")
    }

    /// Add a journal `<namespace>.<suffix>` of the events matching `bindings`, keeping the
    /// newest `max_length`.
    pub fn with_journal(mut self, suffix: &str, bindings: &[&str], max_length: u32) -> Self {
        self.journals.push(JournalDef {
            name: self.queue(suffix),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            max_length,
        });
        self
    }

    /// Add a queue like [`Topology::with_queue`] that delivers to one consumer at a time.
    pub fn with_single_active_queue(mut self, suffix: &str, bindings: &[&str]) -> Self {
        self = self.with_queue(suffix, bindings);
        if let Some(q) = self.queues.last_mut() {
            q.single_active = true;
        }
        self
    }

    /// Replace the retry tiers (tests use short ones).
    pub fn with_retry_tiers(mut self, tiers: &[Duration]) -> Self {
        let mut tiers = tiers.to_vec();
        tiers.sort();
        tiers.dedup();
        self.retry_tiers = tiers;
        self
    }

    /// The full name of the queue with this suffix.
    pub fn queue(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.namespace)
    }

    /// The topic exchange every event is published to.
    pub fn exchange(&self) -> &str {
        &self.namespace
    }

    /// The parking queue for messages that will never succeed.
    pub fn dead_queue(&self) -> String {
        self.queue("dead")
    }

    /// The headers exchange that routes a retried message to its delay tier.
    pub fn delay_exchange(&self) -> String {
        self.queue("delay")
    }

    /// The queue that holds messages for `tier` before returning them to their origin queue.
    pub fn delay_queue(&self, tier: Duration) -> String {
        self.queue(&format!("delay.{}ms", tier.as_millis()))
    }

    /// The tier used for a wanted delay: the smallest tier at least as long, else the longest.
    pub fn tier_for(&self, wanted: Duration) -> Duration {
        self.retry_tiers
            .iter()
            .copied()
            .find(|t| *t >= wanted)
            .or_else(|| self.retry_tiers.last().copied())
            .unwrap_or(Duration::from_secs(1))
    }

    /// The service queue called `name`, if declared.
    pub fn find(&self, name: &str) -> Option<&QueueDef> {
        self.queues.iter().find(|q| q.name == name)
    }
}

/// AMQP topic matching: `*` matches exactly one segment, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("#", "deploy.requested.staging"));
        assert!(topic_matches("deploy.#", "deploy.requested.staging"));
        assert!(topic_matches(
            "deploy.requested.*",
            "deploy.requested.staging"
        ));
        assert!(!topic_matches("deploy.requested.*", "deploy.requested"));
        assert!(!topic_matches("deploy.requested.*", "deploy.requested.a.b"));
        assert!(topic_matches("build.requested", "build.requested"));
        assert!(!topic_matches("build.requested", "build.requested.x"));
        assert!(topic_matches("*.requested.#", "deploy.requested"));
    }

    #[test]
    fn every_catalogue_event_reaches_the_ledger_and_someone_acts_on_deploy_requests() {
        let t = Topology::conveyor("conveyor");
        let ledger = t.find(&t.queue(queues::LEDGER)).unwrap();
        assert!(
            ledger
                .bindings
                .iter()
                .any(|b| topic_matches(b, "rollout.progress.production"))
        );
        let takers = t
            .queues
            .iter()
            .filter(|q| {
                q.bindings
                    .iter()
                    .any(|b| topic_matches(b, "deploy.requested.staging"))
            })
            .count();
        assert!(takers >= 3, "awx-launcher, rollout-watcher, ledger");
    }

    #[test]
    fn tiers() {
        let t =
            Topology::new("t").with_retry_tiers(&[Duration::from_secs(5), Duration::from_secs(1)]);
        assert_eq!(t.tier_for(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(t.tier_for(Duration::from_secs(2)), Duration::from_secs(5));
        assert_eq!(t.tier_for(Duration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(t.delay_queue(Duration::from_secs(5)), "t.delay.5000ms");
    }
}
