//! A private RabbitMQ node for one test: started from the machine's RabbitMQ installation on
//! ports of its own, with its own data directory, so a test may stop, restart or block it
//! without touching the broker every other test shares. Stopped and deleted when dropped.

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::processes::free_port;

/// Where Debian's RabbitMQ keeps the scripts that run a node as the calling user.
const SBIN: &str = "/usr/lib/rabbitmq/bin";

/// A running private node.
pub struct BrokerNode {
    /// `name@localhost`.
    pub node: String,
    /// The AMQP port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl BrokerNode {
    /// Start a node and wait until it accepts AMQP connections (panics if it does not within
    /// a minute). `config` is appended to its `rabbitmq.conf`.
    pub fn start(label: &str, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
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
        let this = Self { node, port, dir };
        let status = this
            .command("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .status()
            .expect("RabbitMQ's scripts are installed (/usr/lib/rabbitmq/bin)");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        this.await_startup();
        this
    }

    /// Wait until the node runs RabbitMQ (`await_startup` fails at once while the Erlang node
    /// has not registered yet, so ask again until a minute has passed).
    fn await_startup(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.ctl(&["await_startup", "--timeout", "60"]).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private RabbitMQ node {} did not start",
                self.node
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn command(&self, script: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(Path::new(SBIN).join(script));
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
        c
    }

    /// `rabbitmqctl -n <node> args…`; whether it succeeded (what it said when not, on stderr).
    pub fn ctl(&self, args: &[&str]) -> std::io::Result<bool> {
        let out = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()?;
        if !out.status.success() {
            eprintln!(
                "rabbitmqctl {args:?}: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.status.success())
    }

    /// `rabbitmqctl … args` until it succeeds: the CLI gives up when the node is slow to answer
    /// (a loaded 2-core machine) though the node is fine. Panics after a minute.
    fn ctl_until_done(&self, args: &[&str]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.ctl(args).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "rabbitmqctl {args:?} kept failing for a minute"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `rabbitmqctl -n <node> args…`, its standard output.
    pub fn ctl_output(&self, args: &[&str]) -> String {
        let out = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The AMQP URL of its default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Messages waiting in each queue (ready + unacked), by name.
    pub fn queue_depths(&self) -> Vec<(String, u64)> {
        self.ctl_output(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .lines()
        .filter_map(|l| {
            let (name, n) = l.rsplit_once('\t')?;
            Some((name.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
    }

    /// Stop the RabbitMQ application (connections drop; the node stays up), wait `down`, start
    /// it again and wait until it accepts connections.
    pub fn restart_app(&self, down: Duration) {
        self.ctl_until_done(&["stop_app"]);
        std::thread::sleep(down);
        self.ctl_until_done(&["start_app"]);
        self.await_startup();
    }

    /// Raise (or clear) a memory alarm: the node blocks every publishing connection until it
    /// is cleared — publishes wait for confirms that do not come.
    pub fn block_publishers(&self, block: bool) {
        let watermark = if block { "0.000001" } else { "0.4" };
        self.ctl_until_done(&["set_vm_memory_high_watermark", watermark]);
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
    }
}
