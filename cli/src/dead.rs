//! `conveyor dead …`: what is parked in the dead-letter queue, and putting it back or away.

use std::time::Duration;

use conveyor::bus::{DeadLetter, DeadLetterAction};
use conveyor::config::{ProcessEnv, Wiring};
use conveyor::events::Envelope;
use conveyor::telemetry::BusMetrics;
use conveyor::{Bus, Topology};

/// What to do.
#[derive(clap::Subcommand)]
pub enum Action {
    /// One line per parked message: id, routing key, origin queue, attempts, reason.
    List,
    /// Everything about one message, the event included.
    Show {
        /// Event id.
        id: String,
    },
    /// Send messages back to the queue they came from (after fixing the cause).
    Replay {
        /// Event ids.
        ids: Vec<String>,
        /// Every parked message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete messages for good.
    Purge {
        /// Event ids.
        ids: Vec<String>,
        /// Every parked message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

fn line(d: &DeadLetter) -> String {
    format!(
        "{:<36}  {:<28}  {:<40}  {:>2}  {}",
        if d.id.is_empty() { "(no id)" } else { &d.id },
        d.routing_key,
        d.origin_queue,
        d.attempts,
        d.reason
    )
}

/// Run `action` against the broker named by `AMQP_URL` and `CONVEYOR_EXCHANGE`.
pub async fn run(action: Action) -> anyhow::Result<bool> {
    let wiring = Wiring::from_env(&ProcessEnv, None)?;
    let bus = Bus::connect(
        wiring.amqp_url.expose(),
        "conveyor-cli",
        Topology::conveyor(&wiring.exchange).with_partitions(wiring.partitions),
        BusMetrics::default(),
        Duration::from_secs(10),
    )
    .await?;
    match action {
        Action::List => {
            let all = bus.dead_letters(DeadLetterAction::Peek).await?;
            println!("{} parked in {}", all.len(), bus.topology().dead_queue());
            for d in &all {
                println!("{}", line(d));
            }
            Ok(true)
        }
        Action::Show { id } => {
            let all = bus.dead_letters(DeadLetterAction::Peek).await?;
            let Some(d) = all.iter().find(|d| d.id == id) else {
                eprintln!("no parked message has id {id}");
                return Ok(false);
            };
            println!("{}", line(d));
            match Envelope::from_json(&d.body) {
                Ok(e) => println!("{}", String::from_utf8_lossy(&e.to_json())),
                Err(err) => println!(
                    "(not an event: {err})\n{}",
                    String::from_utf8_lossy(&d.body)
                ),
            }
            Ok(true)
        }
        Action::Replay { ids, all } | Action::Purge { ids, all } if !all && ids.is_empty() => {
            eprintln!("name the ids, or --all");
            Ok(false)
        }
        Action::Replay { ids, all } => {
            let select = move |d: &DeadLetter| all || ids.contains(&d.id);
            let done = bus.dead_letters(DeadLetterAction::Replay(&select)).await?;
            for d in &done {
                println!("replayed to {}: {}", d.origin_queue, line(d));
            }
            Ok(true)
        }
        Action::Purge { ids, all } => {
            let select = move |d: &DeadLetter| all || ids.contains(&d.id);
            let done = bus.dead_letters(DeadLetterAction::Purge(&select)).await?;
            for d in &done {
                println!("purged: {}", line(d));
            }
            Ok(true)
        }
    }
}
