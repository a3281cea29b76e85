//! A pause survives the broker: on a private RabbitMQ node that the test restarts, a latch set
//! before the restart is still set after it (for a bus that connects afresh, as a restarted
//! service does), and a resume before another restart stays a resume.

#[path = "support/broker.rs"]
mod broker;
#[path = "support/processes.rs"]
mod processes;

use std::time::Duration;

use conveyor::Topology;
use conveyor::events::Actor;

async fn connect(url: &str, namespace: &str) -> conveyor::Bus {
    conveyor::Bus::connect(
        url,
        "holds-test",
        Topology::conveyor(namespace),
        Default::default(),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_broker_restart_and_so_does_a_resume() {
    let node = broker::BrokerNode::start("conveyor-holds", "").await;
    let url = node.url();
    let namespace = conveyor::testing::unique_namespace("holds");
    let bus = connect(&url, &namespace).await;
    let actor = Actor {
        name: "alice".into(),
        via: "token".into(),
        from: None,
    };
    conveyor::control::pause(&bus, "staging", actor.clone(), "incident")
        .await
        .unwrap();
    assert!(conveyor::control::is_paused(&bus, "staging").await.unwrap());
    drop(bus);

    node.restart_app(Duration::from_millis(500)).await;
    let bus = connect(&url, &namespace).await;
    assert!(
        conveyor::control::is_paused(&bus, "staging").await.unwrap(),
        "still paused after the broker restarted"
    );
    assert!(
        !conveyor::control::is_paused(&bus, "production")
            .await
            .unwrap()
    );
    conveyor::control::resume(&bus, "staging", actor, None)
        .await
        .unwrap();
    drop(bus);

    node.restart_app(Duration::from_millis(500)).await;
    let bus = connect(&url, &namespace).await;
    assert!(
        !conveyor::control::is_paused(&bus, "staging").await.unwrap(),
        "the resume is not undone by a restart"
    );
    bus.delete_topology().await.unwrap();
}
