//! The operator scenario: production runs tag 1.0.3; the operator pauses it; tag 1.0.4 arrives
//! and is held; the resume deploys it, once; a rollback restores 1.0.3. Every action goes
//! through the control API with the demo operator's token, as `conveyor pause` would.

use std::time::Duration;

use conveyor::Envelope;
use conveyor::events::Event;
use serde_json::{Value, json};

use super::Demo;
use crate::stack::OPERATOR_TOKEN;

/// POST an action on `environment` to the control API as the demo operator.
async fn act(demo: &Demo, environment: &str, action: &str, body: Value) -> anyhow::Result<Value> {
    demo.control(
        &format!("/api/environments/{environment}/{action}"),
        OPERATOR_TOKEN,
        body,
    )
    .await
    .and_then(|(status, reply)| {
        anyhow::ensure!(status.is_success(), "{action} refused ({status}): {reply}");
        Ok(reply)
    })
}

fn completed(e: &Envelope, correlation: &str) -> bool {
    e.correlation_id == correlation && e.routing_key() == "deploy.completed.production"
}

fn is_end(e: &Envelope) -> bool {
    let key = e.routing_key();
    key.starts_with("deploy.completed.production")
        || key.starts_with("deploy.failed.production")
        || key.starts_with("deploy.superseded.production")
}

/// Whether the ledger's status says production runs `image`.
async fn runs_now(demo: &Demo, image: &str) -> bool {
    let url = format!("{}/api/status/production", demo.stack.dashboard);
    let Ok(answer) = reqwest::get(&url).await else {
        return false;
    };
    let status: Value = answer.json().await.unwrap_or(Value::Null);
    status["current"]["image"] == image
}

/// Play it; `Ok(true)` when each step happened as it should.
pub async fn play(demo: &mut Demo) -> anyhow::Result<bool> {
    println!("→ tag 1.0.3 is pushed to xchem/fragalysis-stack: production deploys it");
    demo.push_tag("1.0.3").await?;
    let Some(first) = demo.until(demo.budget(20.0), is_end).await else {
        return Ok(false);
    };
    if first.routing_key() != "deploy.completed.production" {
        return Ok(false);
    }

    println!("\n→ the operator pauses production (conveyor pause production --reason …)");
    act(
        demo,
        "production",
        "pause",
        json!({"reason": "incident 42: 500s on /api"}),
    )
    .await?;
    println!("paused: production, by {}", crate::stack::OPERATOR_NAME);

    println!("\n→ tag 1.0.4 is pushed while production is paused");
    demo.push_tag("1.0.4").await?;
    let Some(held) = demo
        .until(demo.budget(10.0), |e| {
            e.routing_key() == "deploy.held.production"
        })
        .await
    else {
        return Ok(false);
    };
    let reason = match &held.event {
        Event::DeployHeld(h) => h.reason.clone(),
        _ => String::new(),
    };
    println!("held: xchem/fragalysis-stack:1.0.4 waits ({reason}); nothing is launched");
    // It stays held: no AWX job for it while paused.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Some(e) = demo.next(quiet).await {
        if e.correlation_id == held.correlation_id && e.routing_key().starts_with("deploy.launched")
        {
            println!("a held request was launched while paused");
            return Ok(false);
        }
    }
    if demo.launched_tags() != ["1.0.3"] {
        println!("AWX jobs while paused: {:?}", demo.launched_tags());
        return Ok(false);
    }

    println!("\n→ the operator resumes production (conveyor resume production)");
    act(demo, "production", "resume", json!({})).await?;
    println!("resumed: production; the held 1.0.4 runs");
    let held_id = held.correlation_id.clone();
    if demo
        .until(demo.budget(20.0), |e| completed(e, &held_id))
        .await
        .is_none()
    {
        return Ok(false);
    }
    if demo.launched_tags() != ["1.0.3", "1.0.4"] {
        println!("AWX jobs after the resume: {:?}", demo.launched_tags());
        return Ok(false);
    }

    // The operator acts on what the record shows: wait until the ledger has 1.0.4 as current.
    let recorded = tokio::time::Instant::now() + Duration::from_secs(10);
    while !runs_now(demo, "xchem/fragalysis-stack:1.0.4").await {
        if tokio::time::Instant::now() > recorded {
            println!("the ledger never recorded 1.0.4 as what production runs");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "\n→ 1.0.4 misbehaves: the operator rolls production back (conveyor rollback production)"
    );
    let reply = act(
        demo,
        "production",
        "rollback",
        json!({"reason": "1.0.4 answers 500 on /api"}),
    )
    .await?;
    let image = reply["image"].as_str().unwrap_or("?").to_owned();
    let rollback = reply["correlation_id"].as_str().unwrap_or("").to_owned();
    if demo
        .until(demo.budget(20.0), |e| completed(e, &rollback))
        .await
        .is_none()
    {
        return Ok(false);
    }
    let jobs = demo.launched_tags();
    println!("rolled back: production runs {image} again (AWX jobs: {jobs:?})");
    Ok(image == "xchem/fragalysis-stack:1.0.3" && jobs == ["1.0.3", "1.0.4", "1.0.3"])
}
