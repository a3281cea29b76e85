//! Start-up time and idle memory of each worker binary (release build): time from exec to
//! `/ready` answering 200 (connected to the broker, topology declared), and resident memory
//! after two idle seconds. Baseline in the same run: `conveyor --version` (exec of a binary of the
//! same size that does nothing). Targets: start < 200 ms, idle < 30 MB RSS.
//! `cargo bench -p conveyor-cli --bench idle` (builds the workers in release first).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// POST `total` signed push webhooks to ingest on `port` from `senders` concurrent senders.
fn load_ingest(port: u16, total: usize, senders: usize) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/ingest/tests/payloads/github/push.branch.json"
    ))
    .unwrap();
    let signature = conveyor::signature::sign(b"s", &body);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/webhooks/github");
        let mut tasks = Vec::new();
        for w in 0..senders {
            let (client, url, body, signature) =
                (client.clone(), url.clone(), body.clone(), signature.clone());
            tasks.push(tokio::spawn(async move {
                for i in (w..total).step_by(senders) {
                    let answer = client
                        .post(&url)
                        .header("x-github-event", "push")
                        .header("x-github-delivery", format!("idle-load-{i}"))
                        .header("x-hub-signature-256", &signature)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status(), 200);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_conveyor"))
        .parent()
        .unwrap()
        .to_path_buf();
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "conveyor-ingest",
            "-p",
            "conveyor-build-trigger",
            "-p",
            "conveyor-awx-launcher",
            "-p",
            "conveyor-rollout-watcher",
            "-p",
            "conveyor-notifier",
            "-p",
            "conveyor-ledger",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml");
    // A vhost of its own, deleted at the end with everything the workers declared.
    let vhost = format!("bench-idle-{}", std::process::id());
    for args in [
        vec!["-q", "add_vhost", &vhost],
        vec![
            "-q",
            "set_permissions",
            "-p",
            &vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ],
    ] {
        assert!(
            Command::new("rabbitmqctl")
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        );
    }
    let amqp_url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    // The first process on a fresh vhost creates every queue of the topology (about twenty
    // quorum queues); measured apart, so each worker below is timed on an existing topology.
    let declared = {
        let t = Instant::now();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            conveyor::Bus::connect(
                &amqp_url,
                "bench-idle-declare",
                conveyor::Topology::conveyor("conveyor"),
                conveyor::telemetry::BusMetrics::default(),
                Duration::from_secs(20),
            )
            .await
            .unwrap()
        });
        t.elapsed()
    };

    let t = Instant::now();
    Command::new(dir.join("conveyor"))
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let baseline = t.elapsed();
    println!("| binary | start → /ready | idle RSS |");
    println!("|---|---|---|");
    println!(
        "| `conveyor --version` (baseline: exec only) | {:.1} ms | – |",
        baseline.as_secs_f64() * 1e3
    );
    println!(
        "| first declaration of the topology on a fresh vhost (not in the rows below) | {:.1} ms | – |",
        declared.as_secs_f64() * 1e3
    );
    let http = |port: u16| format!("http://127.0.0.1:{port}");
    let ingest_port = free_port();
    let ledger_dir = std::env::temp_dir().join(format!("bench-idle-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&ledger_dir).unwrap();
    let ledger_db = ledger_dir.join("ledger.db");
    let (gh, awx, kube) = (free_port(), free_port(), free_port());
    for (name, extra) in [
        (
            "ingest",
            vec![
                ("GITHUB_WEBHOOK_SECRET", "s".to_owned()),
                ("INGEST_LISTEN", format!("127.0.0.1:{ingest_port}")),
            ],
        ),
        (
            "build-trigger",
            vec![
                ("GITHUB_TOKEN", "t".to_owned()),
                ("GITHUB_API_URL", http(gh)),
            ],
        ),
        (
            "awx-launcher",
            vec![("AWX_TOKEN", "t".to_owned()), ("AWX_URL", http(awx))],
        ),
        (
            "rollout-watcher",
            vec![("CONVEYOR_KUBE_API_URL", http(kube))],
        ),
        // No channel configured: it consumes and acknowledges.
        ("notifier", vec![]),
        (
            "ledger",
            vec![
                (
                    "LEDGER_DATABASE_URL",
                    format!("sqlite://{}?mode=rwc", ledger_db.display()),
                ),
                ("LEDGER_LISTEN", format!("127.0.0.1:{}", free_port())),
            ],
        ),
    ] {
        let admin = free_port();
        let t = Instant::now();
        let mut child = Command::new(dir.join(name))
            .envs(extra)
            .env("CONVEYOR_CONFIG", config)
            .env("AMQP_URL", &amqp_url)
            .env("CONVEYOR_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", admin))
                .ok()
                .and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.write_all(b"GET /ready HTTP/1.0\r\n\r\n").ok()?;
                    let mut buf = String::new();
                    s.read_to_string(&mut buf).ok()?;
                    buf.starts_with("HTTP/1.0 200")
                        .then_some(())
                        .or(buf.starts_with("HTTP/1.1 200").then_some(()))
                });
            if ok.is_some() {
                break t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{name} never became ready"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        std::thread::sleep(Duration::from_secs(2));
        let rss = rss_kib(child.id());
        // ingest under load: 4000 signed 8.5 KB push webhooks from 32 senders, then its RSS.
        let loaded = (name == "ingest").then(|| {
            load_ingest(ingest_port, 4000, 32);
            rss_kib(child.id())
        });
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "| `{name}` | {:.1} ms | {:.1} MB |",
            ready.as_secs_f64() * 1e3,
            rss as f64 / 1024.0
        );
        let (ms, mb) = (ready.as_secs_f64() * 1e3, rss as f64 / 1024.0);
        println!(
            "SUMMARY|{name} start → /ready|{ms:.0} ms|{:.1} ms (exec)|{:.0}|< 200 ms|{}",
            baseline.as_secs_f64() * 1e3,
            ms / (baseline.as_secs_f64() * 1e3),
            if ms < 200.0 { "pass" } else { "FAIL" }
        );
        println!(
            "SUMMARY|{name} idle RSS|{mb:.1} MB|–|–|< 30 MB|{}",
            if mb < 30.0 { "pass" } else { "FAIL" }
        );
        if let Some(kib) = loaded {
            let mb = kib as f64 / 1024.0;
            println!("| `ingest` after 4000 webhooks from 32 senders | – | {mb:.1} MB |");
            println!(
                "SUMMARY|ingest RSS under load|{mb:.1} MB|{:.1} MB (idle)|{:.2}|< 30 MB|{}",
                rss as f64 / 1024.0,
                kib as f64 / rss as f64,
                if mb < 30.0 { "pass" } else { "FAIL" }
            );
        }
    }
    let _ = std::fs::remove_dir_all(&ledger_dir);
    let _ = Command::new("rabbitmqctl")
        .args(["-q", "delete_vhost", &vhost])
        .status();
}
