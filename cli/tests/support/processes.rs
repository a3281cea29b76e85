//! Child processes for tests that run the real binaries: free ports below the ephemeral range,
//! the built binaries' paths, readiness polling, and a fleet that kills everything it started
//! when the test ends (showing their logs when it failed).

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port for a child process to listen on, chosen below the kernel's ephemeral range
/// (32768–60999 here): a port from `bind(:0)` is released before the child binds it, and any
/// test binding `:0` meanwhile could be handed the same one ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process (nextest runs one per test, with neighbouring pids) gets a window of
    // 120 ports of its own in 20000–31999; it steps through its window.
    let window = 20_000 + (std::process::id() % 100) as u16 * 120;
    loop {
        let port = window + NEXT.fetch_add(1, Ordering::Relaxed) % 120;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The path of a workspace binary built beside `conveyor`.
pub fn binary(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_conveyor"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo builds it with the workspace's tests)",
        path.display()
    );
    path
}

/// Poll `url` until it answers 2xx; panics after `within`.
pub async fn ready_within(url: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll `url` until it answers 2xx (up to a minute).
pub async fn ready(url: &str) {
    ready_within(url, Duration::from_secs(60)).await
}

/// How to start one process, kept so it can be started again after a kill.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The binary's name.
    pub name: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment variables (on top of the test's own).
    pub env: Vec<(String, String)>,
    /// Its `/ready` URL, when it has an admin server.
    pub ready: Option<String>,
}

/// Processes started by a test: killed when the fleet is dropped, however the test ends;
/// their stderr is kept in `logs` (one file per start) and shown when the test fails.
pub struct Fleet {
    /// Each process's spec and, while it runs, its child.
    pub members: Vec<(Spec, Option<Child>)>,
    /// Where their logs go.
    pub logs: tempfile::TempDir,
    starts: usize,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            logs: tempfile::tempdir().unwrap(),
            starts: 0,
        }
    }
}

impl Fleet {
    /// Start a new member; returns its index.
    pub fn start(&mut self, spec: Spec) -> usize {
        let child = self.spawn(&spec);
        self.members.push((spec, Some(child)));
        self.members.len() - 1
    }

    fn spawn(&mut self, spec: &Spec) -> Child {
        self.starts += 1;
        let log = self
            .logs
            .path()
            .join(format!("{}-{}.log", spec.name, self.starts));
        Command::new(binary(&spec.name))
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    /// SIGKILL member `i` (no graceful shutdown: what a crash or an OOM kill does).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again with the same spec (after [`Fleet::kill`]).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let spec = self.members[i].0.clone();
        let child = self.spawn(&spec);
        self.members[i].1 = Some(child);
    }

    /// Indices of the members running `name`.
    pub fn named(&self, name: &str) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].0.name == name)
            .collect()
    }

    /// Wait until every member with an admin server is ready.
    pub async fn all_ready(&self) {
        for (spec, _) in &self.members {
            if let Some(url) = &spec.ready {
                ready(url).await;
            }
        }
    }

    /// Every log line written so far, with the file it came from.
    pub fn log_lines(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.extend(text.lines().map(|l| (name.clone(), l.to_owned())));
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for (name, line) in self.log_lines() {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("{name}: {line}");
                }
            }
        }
    }
}
