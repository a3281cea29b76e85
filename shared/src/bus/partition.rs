//! Partitioned stages: what orders a stage's work (its key), which of its N partition queues an
//! event goes to, and which replica consumes which partition.
//!
//! Order matters per key, not globally: an executor's decisions per environment, the ledger's
//! reassembly per chain, the notifier's reports per deployment, build-trigger's coalescing per
//! group of repositories linked by `downstream`. Each partitioned stage has N queues; a
//! publisher names, in one header per stage, the partition of the event's key (a stable hash, so
//! every process agrees), and a headers exchange per stage routes it there. Replicas of a stage
//! divide the partitions among themselves by rendezvous hashing over the live replicas they
//! hear of (see [`assign`]); each partition queue is single-active-consumer, so a moment when
//! two replicas both believe they own one costs a wait, never two consumers at once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::events::{Envelope, Event};

/// How often a replica announces itself to the other consumers of its stage (and looks again
/// at who owns which partition).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A replica not heard of for this long is gone: its partitions go to the others.
pub const EXPIRY: Duration = Duration::from_millis(3500);

/// What orders a stage's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    /// The environment a deployment event is for (executors, rollout-watcher).
    Environment,
    /// The chain (correlation id) an event belongs to (the ledger).
    Chain,
    /// The deployment (chain and environment) an event is about (the notifier).
    Deployment,
    /// The group of repositories `downstream` links (build-trigger's coalescing).
    RepositoryGroup,
}

/// How one stage is partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// What orders its work.
    pub by: PartitionBy,
    /// How many partition queues it has.
    pub count: u16,
}

/// A 64-bit hash every process computes alike, whatever its build: FNV-1a, then MurmurHash3's
/// finaliser, so that keys differing in one character land far apart.
pub fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The repository an event is about, if any.
fn repository(event: &Event) -> Option<&str> {
    match event {
        Event::ScmPush(p) => Some(&p.repository),
        Event::BuildStarted(b) | Event::BuildSucceeded(b) | Event::BuildFailed(b) => {
            Some(&b.repository)
        }
        Event::ImagePushed(i) => Some(&i.image.repository),
        Event::BuildRequested(b) => Some(&b.repository),
        _ => None,
    }
}

/// The key of `envelope` that orders a stage partitioned `by`; `groups` maps a repository to
/// its group (the ones `downstream` links), when known.
pub fn key(by: PartitionBy, envelope: &Envelope, groups: &BTreeMap<String, String>) -> String {
    // Every event about an environment is qualified by it (its routing key's last part).
    let environment = || envelope.event.qualifier().unwrap_or_default();
    match by {
        PartitionBy::Environment => environment().to_owned(),
        PartitionBy::Chain => envelope.correlation_id.clone(),
        PartitionBy::Deployment => {
            crate::events::deployment_id(&envelope.correlation_id, environment())
        }
        PartitionBy::RepositoryGroup => match repository(&envelope.event) {
            Some(repo) => groups
                .get(&repo.to_ascii_lowercase())
                .cloned()
                .unwrap_or_else(|| repo.to_ascii_lowercase()),
            None => envelope.correlation_id.clone(),
        },
    }
}

/// The partition of `key` among `count`.
pub fn partition_of(key: &str, count: u16) -> u16 {
    (stable_hash(key) % u64::from(count.max(1))) as u16
}

/// Which partitions of `count` replica `me` consumes, among the live replicas `members`
/// (`me` counts even before it has heard itself). Every replica that sees the same members
/// computes the same answer: each takes `count / n` partitions, the first `count % n` by rank
/// one more, and each partition goes to the member it hashes highest with (rendezvous hashing)
/// among those with room left — even shares, and a replica joining or leaving moves few.
pub fn assign(stage: &str, count: u16, members: &[String], me: &str) -> Vec<u16> {
    let mut all: Vec<&str> = members.iter().map(String::as_str).collect();
    if !all.contains(&me) {
        all.push(me);
    }
    all.sort_by_key(|m| std::cmp::Reverse((stable_hash(&format!("{stage}/{m}")), *m)));
    let n = all.len();
    let mut room: Vec<usize> = (0..n)
        .map(|i| usize::from(count) / n + usize::from(i < usize::from(count) % n))
        .collect();
    let mut mine = Vec::new();
    for p in 0..count {
        let winner = (0..n)
            .filter(|i| room[*i] > 0)
            .max_by_key(|i| (stable_hash(&format!("{stage}/{p}/{}", all[*i])), all[*i]));
        if let Some(i) = winner {
            room[i] -= 1;
            if all[i] == me {
                mine.push(p);
            }
        }
    }
    mine
}

/// Which of `members` partition `p` of `stage` goes to (see [`assign`]); none when there are
/// no members.
pub fn owner(stage: &str, count: u16, members: &[String], p: u16) -> Option<String> {
    members
        .iter()
        .find(|m| assign(stage, count, members, m).contains(&p))
        .cloned()
}

/// The groups `downstream` links, each repository named by the smallest name in its group
/// (lower case): builds that coalesce into one downstream build are ordered together.
pub fn repository_groups(edges: &[(String, String)]) -> BTreeMap<String, String> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    fn root(parent: &mut BTreeMap<String, String>, x: &str) -> String {
        let mut r = x.to_owned();
        while let Some(p) = parent.get(&r).filter(|p| **p != r) {
            r = p.clone();
        }
        r
    }
    for (a, b) in edges {
        let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
        parent.entry(a.clone()).or_insert_with(|| a.clone());
        parent.entry(b.clone()).or_insert_with(|| b.clone());
        let (ra, rb) = (root(&mut parent, &a), root(&mut parent, &b));
        if ra != rb {
            let (keep, other) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent.insert(other, keep);
        }
    }
    let names: Vec<String> = parent.keys().cloned().collect();
    names
        .into_iter()
        .map(|n| {
            let r = root(&mut parent, &n);
            (n, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_replicas_share_them_evenly() {
        let members: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut owned = vec![0; 64];
        let mut per_member = Vec::new();
        for m in &members {
            let mine = assign("rollout-watcher", 64, &members, m);
            for p in &mine {
                owned[usize::from(*p)] += 1;
            }
            per_member.push(mine.len());
        }
        assert!(owned.iter().all(|n| *n == 1), "{owned:?}");
        assert_eq!(per_member, [16, 16, 16, 16], "even shares");
        // Four partitions among two, three and four replicas.
        for k in 2..=4 {
            let mut shares: Vec<usize> = members[..k]
                .iter()
                .map(|m| assign("ledger", 4, &members[..k], m).len())
                .collect();
            shares.sort_unstable();
            assert_eq!(shares.iter().sum::<usize>(), 4);
            assert!(shares[k - 1] - shares[0] <= 1, "{k} replicas: {shares:?}");
        }
        // A replica leaving mostly leaves the others their partitions.
        let before = assign("rollout-watcher", 64, &members, "a");
        let after = assign("rollout-watcher", 64, &members[..3], "a");
        let kept = before.iter().filter(|p| after.contains(p)).count();
        assert!(
            kept * 4 >= before.len() * 3,
            "a kept {kept} of {}",
            before.len()
        );
        // Alone, a replica takes everything, even before it hears itself.
        assert_eq!(assign("ledger", 8, &[], "solo").len(), 8);
    }

    #[test]
    fn the_owner_of_a_partition_is_the_member_it_is_assigned_to() {
        let members: Vec<String> = ["a/1", "b/2", "c/3"].map(String::from).to_vec();
        for p in 0..8 {
            let owner = owner("stage", 8, &members, p).expect("someone owns it");
            assert!(assign("stage", 8, &members, &owner).contains(&p));
        }
        assert_eq!(owner("stage", 8, &[], 0), None);
    }

    #[test]
    fn linked_repositories_share_a_group() {
        let groups = repository_groups(&[
            (
                "xchem/fragalysis-frontend".into(),
                "xchem/fragalysis-stack".into(),
            ),
            (
                "xchem/fragalysis-backend".into(),
                "xchem/fragalysis-stack".into(),
            ),
            ("other/a".into(), "other/b".into()),
        ]);
        assert_eq!(groups["xchem/fragalysis-stack"], "xchem/fragalysis-backend");
        assert_eq!(
            groups["xchem/fragalysis-frontend"],
            "xchem/fragalysis-backend"
        );
        assert_eq!(groups["other/b"], "other/a");
    }

    #[test]
    fn the_hash_is_the_same_in_every_process_and_spreads_keys() {
        // Fixed: a process of another build must put a key in the same partition.
        assert_eq!(stable_hash("staging"), 0xbb05_6a20_0e5d_c8fd);
        assert_eq!(partition_of("staging", 4), 1);
        assert_eq!(partition_of("staging", 1), 0);
        let mut per_partition = [0; 8];
        for i in 0..800 {
            per_partition[usize::from(partition_of(&format!("env-{i}"), 8))] += 1;
        }
        assert!(
            per_partition.iter().all(|n| (70..=130).contains(n)),
            "{per_partition:?}"
        );
    }
}
