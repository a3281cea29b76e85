//! AMQP over TLS: a private RabbitMQ node with a TLS listener whose certificate a throwaway CA
//! signed. The bus connects with `amqps://` trusting that CA (`AMQP_CA_FILE` for the services),
//! publishes and consumes through it; without the CA the connection is refused; a service
//! binary becomes ready over TLS; a bad `AMQP_CA_FILE` stops a service at start, named.

#[path = "support/broker.rs"]
mod broker;
#[path = "support/processes.rs"]
mod processes;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conveyor::events::{DeployFailed, Envelope, Event};
use conveyor::{Bus, ConsumerOptions, Outcome, Topology};
use processes::{Fleet, Spec, free_port};

/// A CA, and a certificate it signed for `localhost` / 127.0.0.1, made with the openssl CLI.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=conveyor-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn event() -> Envelope {
    Envelope::new(
        "conveyor/test",
        Event::DeployFailed(DeployFailed {
            environment: "tls".into(),
            stage: conveyor::events::Stage::Job,
            reason: "over TLS".into(),
            operation: None,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_and_the_services_speak_amqps_to_a_broker_signed_by_a_private_ca() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let tls_port = free_port();
    let d = certs.path().display();
    let node = broker::BrokerNode::start(
        "conveyor-faults-tls",
        &format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
             ssl_options.cacertfile = {d}/ca.pem\n\
             ssl_options.certfile = {d}/server.pem\n\
             ssl_options.keyfile = {d}/server.key\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false"
        ),
    )
    .await;
    let url = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
    let ca = std::fs::read_to_string(certs.path().join("ca.pem")).unwrap();
    let namespace = conveyor::testing::unique_namespace("tls");

    // Without the CA, the broker's certificate is not trusted: no connection.
    let refused = Bus::connect(
        &url,
        "tls-untrusted",
        Topology::new(&namespace),
        Default::default(),
        Duration::from_secs(3),
    )
    .await;
    assert!(refused.is_err(), "connected without trusting the CA");

    // With it: publish and consume through the TLS listener.
    let bus = Bus::connect_trusting(
        &url,
        Some(&ca),
        "tls-test",
        Topology::new(&namespace).with_queue("tls", &["deploy.#"]),
        Default::default(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let sent = event();
    bus.publish(&sent).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let stop = tokio_util::sync::CancellationToken::new();
    let queue = bus.topology().queue("tls");
    let consuming = tokio::spawn({
        let (bus, stop) = (bus.clone(), stop.clone());
        async move {
            bus.consume(
                &queue,
                ConsumerOptions::default(),
                move |incoming| {
                    if let Some(tx) = conveyor::sync::lock(&tx).take() {
                        let _ = tx.send(incoming.envelope.id.clone());
                    }
                    async { Outcome::ack() }
                },
                stop,
            )
            .await
        }
    });
    let got = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the event came back over TLS")
        .unwrap();
    assert_eq!(got, sent.id);
    stop.cancel();
    let _ = consuming.await;

    // A service binary, configured only through its environment, becomes ready over TLS.
    let admin = free_port();
    let ingest_port = free_port();
    let env = |ca_file: &str| -> Vec<(String, String)> {
        [
            ("AMQP_URL", url.clone()),
            ("AMQP_CA_FILE", ca_file.to_owned()),
            ("CONVEYOR_EXCHANGE", namespace.clone()),
            ("INGEST_LISTEN", format!("127.0.0.1:{ingest_port}")),
            ("CONVEYOR_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
            ("GITHUB_WEBHOOK_SECRET", "whsec_tls".to_owned()),
            (
                "CONVEYOR_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml").to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let mut fleet = Fleet::default();
    fleet.start(Spec {
        name: "ingest".into(),
        args: Vec::new(),
        env: env(&certs.path().join("ca.pem").display().to_string()),
        ready: None,
    });
    processes::ready(&format!("http://127.0.0.1:{admin}/ready")).await;
    drop(fleet);

    // A CA file that is not one stops the service at start, naming the key.
    let out = Command::new(processes::binary("ingest"))
        .envs(env(&certs.path().join("server.csr").display().to_string()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AMQP_CA_FILE"), "{stderr}");
    drop(node);
}
