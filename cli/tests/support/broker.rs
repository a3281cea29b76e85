//! A private RabbitMQ node for one test, or a cluster of them: started from the machine's
//! RabbitMQ installation on ports of its own, with its own data directory, so a test may stop,
//! restart or block it without touching the broker every other test shares. Stopped and deleted
//! when dropped.

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use super::processes::free_port;

/// Where Debian's RabbitMQ keeps the scripts that run a node as the calling user.
const SBIN: &str = "/usr/lib/rabbitmq/bin";

/// How long rabbitmqctl may keep failing before the test gives up: the CLI gives up when the
/// node is slow to answer (a loaded 2-core machine) though the node is fine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running private node.
pub struct BrokerNode {
    /// `name@localhost`.
    pub node: String,
    /// The AMQP port.
    pub port: u16,
    /// The Erlang distribution port.
    dist: u16,
    dir: tempfile::TempDir,
}

impl BrokerNode {
    /// Start a node and wait until it accepts AMQP connections (panics if it does not within
    /// a minute). `config` is appended to its `rabbitmq.conf`.
    pub async fn start(label: &str, config: &str) -> Self {
        Self::start_with_cookie(label, config, None).await
    }

    /// [`BrokerNode::start`] with the Erlang cookie the nodes of one cluster share.
    async fn start_with_cookie(label: &str, config: &str, cookie: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(cookie) = cookie {
            let path = dir.path().join(".erlang.cookie");
            std::fs::write(&path, cookie).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        let port = free_port();
        // The distribution port must be free too; RabbitMQ's default is the AMQP port + 20000.
        let dist = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        let node = format!("{label}-{}-{port}@localhost", std::process::id());
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n{config}\n"),
        )
        .unwrap();
        // An empty env file: the machine's rabbitmq-env.conf names the shared node.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").unwrap();
        let this = Self {
            node,
            port,
            dist,
            dir,
        };
        this.boot().await;
        this
    }

    /// Start the node's Erlang VM and wait until it accepts connections.
    async fn boot(&self) {
        let status = self
            .command("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_DIST_PORT", self.dist.to_string())
            .status()
            .await
            .expect("RabbitMQ's scripts are installed (/usr/lib/rabbitmq/bin)");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        // await_startup fails at once while the Erlang node has not registered yet.
        self.ctl_until_done(&["await_startup", "--timeout", "60"])
            .await;
    }

    /// SIGKILL the node's Erlang VM (what a crashed or OOM-killed broker is), keep it down for
    /// `down`, then boot it again from its data directory.
    pub async fn kill_and_restart(&self, down: Duration) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        // Gone once it answers no more.
        let deadline = Instant::now() + PATIENCE;
        while self.run_ctl(&["ping"]).await.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(down).await;
        self.boot().await;
    }

    fn env(&self, c: &mut std::process::Command) {
        let d = self.dir.path();
        c.env("HOME", d) // its Erlang cookie lives here
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    }

    fn command(&self, script: &str) -> Command {
        let mut c = std::process::Command::new(Path::new(SBIN).join(script));
        self.env(&mut c);
        Command::from(c)
    }

    /// `rabbitmqctl -n <node> args…`: whether it succeeded and what it printed.
    async fn run_ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .expect("rabbitmqctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `rabbitmqctl … args` until it succeeds; panics, with what it said, after a minute.
    async fn ctl_until_done(&self, args: &[&str]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (ok, out, err) = self.run_ctl(args).await;
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmqctl {args:?} kept failing for a minute: {} {}",
                out.trim(),
                err.trim()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The AMQP URL of its default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Messages waiting in each queue (ready + unacked), by name.
    pub async fn queue_depths(&self) -> Vec<(String, u64)> {
        let (_, out, _) = self
            .run_ctl(&[
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages",
            ])
            .await;
        out.lines()
            .filter_map(|l| {
                let (name, n) = l.rsplit_once('\t')?;
                Some((name.to_owned(), n.trim().parse().ok()?))
            })
            .collect()
    }

    /// Stop the RabbitMQ application (connections drop; the node stays up), keep it down for
    /// `down`, start it again and wait until it accepts connections.
    pub async fn restart_app(&self, down: Duration) {
        self.ctl_until_done(&["stop_app"]).await;
        tokio::time::sleep(down).await;
        self.ctl_until_done(&["start_app"]).await;
        self.ctl_until_done(&["await_startup", "--timeout", "60"])
            .await;
    }

    /// Raise (or clear) a memory alarm: the node blocks every publishing connection until it
    /// is cleared — publishes wait for confirms that do not come.
    pub async fn block_publishers(&self, block: bool) {
        let watermark = if block { "0.000001" } else { "0.4" };
        self.ctl_until_done(&["set_vm_memory_high_watermark", watermark])
            .await;
    }
}

/// A cluster of private nodes, every quorum queue replicated on three of them.
pub struct BrokerCluster {
    /// Its nodes; the first is the one the others joined.
    pub nodes: Vec<BrokerNode>,
}

impl BrokerCluster {
    /// Start `size` nodes and join them into one cluster.
    pub async fn start(label: &str, size: usize) -> Self {
        let cookie = format!("CONVEYORCLUSTER{}", uuid::Uuid::now_v7().simple()).to_uppercase();
        let mut nodes = Vec::new();
        for i in 0..size {
            let node =
                BrokerNode::start_with_cookie(&format!("{label}{i}"), "", Some(&cookie)).await;
            if let Some(first) = nodes.first() {
                let first: &BrokerNode = first;
                node.ctl_until_done(&["stop_app"]).await;
                node.ctl_until_done(&["join_cluster", &first.node]).await;
                node.ctl_until_done(&["start_app"]).await;
                node.ctl_until_done(&["await_startup", "--timeout", "60"])
                    .await;
            }
            nodes.push(node);
        }
        Self { nodes }
    }

    /// Every node's URL, comma-separated, starting with node `first`: what `AMQP_URL` holds for
    /// a cluster (replicas given other orders spread over the nodes).
    pub fn url(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|i| self.nodes[(first + i) % n].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many queues each node leads, by node index (from a running node).
    pub async fn leaders(&self) -> Vec<usize> {
        let mut counts = vec![0; self.nodes.len()];
        for asker in &self.nodes {
            let (ok, out, _) = asker
                .run_ctl(&["list_queues", "-q", "--no-table-headers", "name", "leader"])
                .await;
            if !ok {
                continue;
            }
            for line in out.lines() {
                if let Some((_, leader)) = line.rsplit_once('\t')
                    && let Some(i) = self.nodes.iter().position(|n| n.node == leader.trim())
                {
                    counts[i] += 1;
                }
            }
            break;
        }
        counts
    }

    /// SIGKILL node `i` and boot it again after `down` (see [`BrokerNode::kill_and_restart`]).
    pub async fn kill_and_restart(&self, i: usize, down: Duration) {
        self.nodes[i].kill_and_restart(down).await;
    }

    /// Stop node `i`'s RabbitMQ application: its connections drop, the queues it led elect new
    /// leaders on the others.
    pub async fn stop(&self, i: usize) {
        self.nodes[i].ctl_until_done(&["stop_app"]).await;
    }

    /// Start node `i` again and wait until it accepts connections.
    pub async fn start_node(&self, i: usize) {
        self.nodes[i].ctl_until_done(&["start_app"]).await;
        self.nodes[i]
            .ctl_until_done(&["await_startup", "--timeout", "60"])
            .await;
    }

    /// Raise (or clear) a disk alarm on node `i`: a free-disk limit no disk meets. Like a
    /// memory alarm, it blocks publishers across the cluster until cleared.
    pub async fn disk_alarm(&self, i: usize, on: bool) {
        let limit = if on { "100000GB" } else { "50MB" };
        self.nodes[i]
            .ctl_until_done(&["set_disk_free_limit", limit])
            .await;
    }

    /// Messages waiting in each queue, by name (from a running node).
    pub async fn queue_depths(&self) -> Vec<(String, u64)> {
        for n in &self.nodes {
            let depths = n.queue_depths().await;
            if !depths.is_empty() {
                return depths;
            }
        }
        Vec::new()
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        let mut c = std::process::Command::new(Path::new(SBIN).join("rabbitmqctl"));
        self.env(&mut c);
        let _ = c.args(["-n", &self.node, "stop"]).status();
    }
}
