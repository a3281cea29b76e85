//! What build-trigger remembers between events: the pending dispatch per downstream, the chain
//! each dispatched run belongs to, and which events were already acted on. Bounded; losing it
//! (a restart, a failover) costs at most a redundant build, never a missing one, because every
//! decision that needs it is re-checked against GitHub.

use std::collections::{BTreeMap, HashMap};

use conveyor::bounded::BoundedMap;

use conveyor::Envelope;
use conveyor::events::UpstreamCommit;
use time::OffsetDateTime;

/// How many entries each map keeps before forgetting the oldest.
const CAPACITY: usize = 4096;

/// A dispatch whose run has not started yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The run id, once known (200 answer, or the `requested` webhook after a 204).
    pub run_id: Option<u64>,
    /// The inputs it was dispatched with.
    pub inputs: BTreeMap<String, String>,
    /// The chain it belongs to.
    pub correlation_id: String,
    /// When it was sent.
    pub dispatched_at: OffsetDateTime,
}

/// The deployment chain a dispatched run continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Correlation id of the chain.
    pub correlation_id: String,
    /// Upstream commits so far.
    pub upstream: Vec<UpstreamCommit>,
}

/// The memory.
#[derive(Debug)]
pub struct Memo {
    pending: HashMap<String, Pending>,
    newest: HashMap<String, (OffsetDateTime, String)>,
    chains: BoundedMap<u64, Chain>,
    done: BoundedMap<(String, String), Envelope>,
    deployed: BoundedMap<String, Vec<String>>,
    ambiguous: BoundedMap<(String, String), ()>,
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            newest: HashMap::new(),
            chains: BoundedMap::new(CAPACITY),
            done: BoundedMap::new(CAPACITY),
            deployed: BoundedMap::new(CAPACITY),
            ambiguous: BoundedMap::new(CAPACITY),
        }
    }
}

fn key(repo: &str) -> String {
    repo.to_ascii_lowercase()
}

impl Memo {
    /// The pending dispatch of `repo`, if any.
    pub fn pending(&self, repo: &str) -> Option<Pending> {
        self.pending.get(&key(repo)).cloned()
    }

    /// Record a dispatch of `repo`.
    pub fn set_pending(&mut self, repo: &str, pending: Pending) {
        self.pending.insert(key(repo), pending);
    }

    /// Forget the pending dispatch of `repo` if it is `run_id` (or its id is unknown).
    pub fn clear_pending(&mut self, repo: &str, run_id: Option<u64>) {
        let k = key(repo);
        if self
            .pending
            .get(&k)
            .is_some_and(|p| p.run_id.is_none() || p.run_id == run_id)
        {
            self.pending.remove(&k);
        }
    }

    /// A dispatched run of `repo` was reported: learn its id (204 dispatches) or, once it has
    /// started, end the pending state.
    pub fn run_seen(&mut self, repo: &str, run_id: u64, started: bool) {
        let k = key(repo);
        let Some(p) = self.pending.get_mut(&k) else {
            return;
        };
        if p.run_id.is_none() {
            p.run_id = Some(run_id);
            let chain = Chain {
                correlation_id: p.correlation_id.clone(),
                upstream: Vec::new(),
            };
            if self.chains.get(&run_id).is_none() {
                self.chains.insert(run_id, chain);
            }
        }
        if started && self.pending.get(&k).and_then(|p| p.run_id) == Some(run_id) {
            self.pending.remove(&k);
        }
    }

    /// Note an upstream success for downstream `repo` at `at`.
    pub fn saw_success(&mut self, repo: &str, at: OffsetDateTime, correlation_id: &str) {
        let k = key(repo);
        if self.newest.get(&k).is_none_or(|(t, _)| at > *t) {
            self.newest.insert(k, (at, correlation_id.to_owned()));
        }
    }

    /// The chain of a success for `repo` newer than `at`, if one was seen.
    pub fn newer_success(&self, repo: &str, at: OffsetDateTime) -> Option<String> {
        self.newest
            .get(&key(repo))
            .filter(|(t, _)| *t > at)
            .map(|(_, c)| c.clone())
    }

    /// The chain a dispatched run belongs to.
    pub fn chain_of(&self, run_id: u64) -> Option<Chain> {
        self.chains.get(&run_id).cloned()
    }

    /// Remember the chain of a dispatched run.
    pub fn remember_chain(&mut self, run_id: u64, chain: Chain) {
        self.chains.insert(run_id, chain);
    }

    /// The `build.requested` already produced for (event, downstream).
    pub fn done(&self, event_id: &str, repo: &str) -> Option<Envelope> {
        self.done.get(&(event_id.to_owned(), key(repo))).cloned()
    }

    /// Remember the `build.requested` produced for (event, downstream).
    pub fn record_done(&mut self, event_id: &str, repo: &str, requested: Envelope) {
        self.done
            .insert((event_id.to_owned(), key(repo)), requested);
    }

    /// A dispatch for (event, downstream) failed in a way that may have created the run.
    pub fn ambiguous(&mut self, event_id: &str, repo: &str) {
        self.ambiguous.insert((event_id.to_owned(), key(repo)), ());
    }

    /// Whether a dispatch for (event, downstream) may have happened already.
    pub fn was_ambiguous(&self, event_id: &str, repo: &str) -> bool {
        self.ambiguous
            .get(&(event_id.to_owned(), key(repo)))
            .is_some()
    }

    /// A deployment of `environment` was requested for chain `correlation_id`.
    pub fn deployed(&mut self, correlation_id: &str, environment: &str) {
        let k = correlation_id.to_owned();
        match self.deployed.get_mut(&k) {
            Some(envs) if !envs.iter().any(|e| e == environment) => {
                envs.push(environment.to_owned())
            }
            Some(_) => {}
            None => self.deployed.insert(k, vec![environment.to_owned()]),
        }
    }

    /// Environments a deployment was requested for in chain `correlation_id`.
    pub fn deployments_of(&self, correlation_id: &str) -> Vec<String> {
        self.deployed
            .get(&correlation_id.to_owned())
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(run_id: Option<u64>) -> Pending {
        Pending {
            run_id,
            inputs: BTreeMap::new(),
            correlation_id: "c1".into(),
            dispatched_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_204_dispatch_learns_its_run_id_then_ends_when_started() {
        let mut m = Memo::default();
        m.set_pending("o/stack", pending(None));
        m.run_seen("O/Stack", 7, false);
        assert_eq!(m.pending("o/stack").unwrap().run_id, Some(7));
        assert_eq!(m.chain_of(7).unwrap().correlation_id, "c1");
        m.run_seen("o/stack", 8, true);
        assert!(
            m.pending("o/stack").is_some(),
            "another run does not end it"
        );
        m.run_seen("o/stack", 7, true);
        assert!(m.pending("o/stack").is_none());
    }

    #[test]
    fn newest_success_only_moves_forward() {
        let mut m = Memo::default();
        let t = OffsetDateTime::UNIX_EPOCH;
        m.saw_success("o/s", t + time::Duration::seconds(10), "late");
        m.saw_success("o/s", t, "early");
        assert_eq!(m.newer_success("o/s", t).as_deref(), Some("late"));
        assert_eq!(
            m.newer_success("o/s", t + time::Duration::seconds(10)),
            None
        );
    }
}
