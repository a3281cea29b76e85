//! The bad-release scenario: production verifies each rollout against the application's health
//! check and rolls back on failure. Tag 1.0.3 passes; 1.0.4 starts fine but answers 500, so
//! Conveyor rolls back to 1.0.3 by itself; 1.0.5 crash-loops, Conveyor rolls back again, and the
//! pod left stuck on 1.0.5 is deleted with `conveyor unstick` so the rollback can finish.

use conveyor::Envelope;
use conveyor::config::{HttpCheck, OnFailure, Pipeline, Verify};
use conveyor::events::{Event, Trigger};
use serde_json::json;

use super::Demo;
use crate::stack::OPERATOR_TOKEN;

/// The image whose pods start but whose application answers 500.
pub const SERVES_ERRORS: &str = ":1.0.4";
/// The image whose pods crash-loop.
pub const CRASHES: &str = ":1.0.5";

/// Production as this story runs it: verified against `app` (the simulated application's
/// health checks), rolled back on failure, unstuck on request.
pub fn configure(pipeline: &mut Pipeline, app: &str, unit: f64) {
    let Some(production) = pipeline
        .environments
        .iter_mut()
        .find(|e| e.name == "production")
    else {
        return;
    };
    let url = format!(
        "{app}/apps/{}/{}/health",
        production.statefulset.namespace, production.statefulset.name
    );
    let within_secs = (8.0 * unit).ceil().max(4.0) as u64;
    println!(
        "For this story production verifies GET {url} (200, twice in a row within {within_secs} s), rolls back by itself when a release fails, and may be unstuck (unstick = true).\n"
    );
    production.verify = Some(Verify {
        http: Some(HttpCheck {
            url,
            expect_status: 200,
            consecutive: 2,
            interval_secs: 1,
            within_secs,
        }),
        prometheus: None,
        soak_secs: 0,
    });
    production.on_failure = OnFailure::Rollback;
    production.unstick = true;
    // Time for the operator to act on a stuck pod before the stall fails the rollback.
    pipeline.rollout.fail_grace_secs = (8.0 * unit).ceil() as u64;
}

fn failure(e: &Envelope) -> String {
    match &e.event {
        Event::DeployFailed(f) => format!("{}: {}", f.stage, f.reason),
        _ => String::new(),
    }
}

/// Wait for the rollback Conveyor requests by itself after `failed`.
async fn automatic_rollback(demo: &mut Demo, failed: &Envelope) -> Option<Envelope> {
    let failed_id = conveyor::events::deployment_id(&failed.correlation_id, "production");
    let replaces_it = |e: &Envelope| {
        matches!(&e.event, Event::DeployRequested(r)
            if r.operation.trigger == Trigger::Rollback
                && r.operation.replaces.as_deref() == Some(failed_id.as_str()))
    };
    // It may have been printed with the failure already.
    if let Some(e) = demo.seen.iter().find(|e| replaces_it(e)) {
        return Some(e.clone());
    }
    demo.until(demo.budget(10.0), replaces_it).await
}

/// Push `tag` and wait for its deployment's end (`None` when the time is up).
async fn release(demo: &mut Demo, tag: &str) -> anyhow::Result<Option<Envelope>> {
    demo.push_tag(tag).await?;
    let request = demo
        .until(demo.budget(10.0), |e| {
            matches!(&e.event, Event::DeployRequested(r) if r.image.tag.as_deref() == Some(tag))
        })
        .await;
    let Some(request) = request else {
        return Ok(None);
    };
    Ok(demo.next_of(30.0, &request, &ENDS).await)
}

/// How a production deployment ends.
const ENDS: [&str; 2] = ["deploy.completed.production", "deploy.failed.production"];

/// Play it; `Ok(true)` when each step happened as it should.
pub async fn play(demo: &mut Demo) -> anyhow::Result<bool> {
    demo.stack.world.kube.app_rule(SERVES_ERRORS, 500);

    println!("→ tag 1.0.3 is pushed: production deploys it and verifies it");
    let Some(good) = release(demo, "1.0.3").await? else {
        return Ok(false);
    };
    if good.routing_key() != "deploy.completed.production" {
        println!("1.0.3 did not pass: {}", failure(&good));
        return Ok(false);
    }
    println!("verified: production runs 1.0.3 and its health check answers 200");
    if !(failed_verification(demo).await? && crash_loop(demo).await?) {
        return Ok(false);
    }
    let unstuck = demo
        .seen
        .iter()
        .filter(|e| e.routing_key() == "rollout.unstuck.production")
        .count();
    let tags = demo.launched_tags();
    let production: Vec<&str> = tags
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with("1.0."))
        .collect();
    println!(
        "rolled back again: production runs 1.0.3 (AWX jobs: {production:?}; pods deleted: {unstuck})"
    );
    Ok(production == ["1.0.3", "1.0.4", "1.0.3", "1.0.5", "1.0.3"] && unstuck == 1)
}

/// 1.0.4 fails its verification, and Conveyor rolls production back to 1.0.3.
async fn failed_verification(demo: &mut Demo) -> anyhow::Result<bool> {
    println!("\n→ tag 1.0.4 is pushed: its pods start, but the application answers 500");
    let Some(bad) = release(demo, "1.0.4").await? else {
        return Ok(false);
    };
    if bad.routing_key() != "deploy.failed.production" {
        return Ok(false);
    }
    println!("failed at {}", failure(&bad));
    let Some(back) = automatic_rollback(demo, &bad).await else {
        println!("no rollback was requested");
        return Ok(false);
    };
    let Some(restored) = demo.next_of(30.0, &back, &ENDS).await else {
        return Ok(false);
    };
    if restored.routing_key() != "deploy.completed.production" {
        println!("the rollback failed: {}", failure(&restored));
        return Ok(false);
    }
    println!("rolled back by Conveyor: production runs 1.0.3 again, verified");
    Ok(true)
}

/// 1.0.5's first pod crash-loops; the rollback finds it stuck, and the operator unsticks it.
async fn crash_loop(demo: &mut Demo) -> anyhow::Result<bool> {
    println!("\n→ tag 1.0.5 is pushed: its first pod crash-loops");
    let Some(crashed) = release(demo, "1.0.5").await? else {
        return Ok(false);
    };
    if crashed.routing_key() != "deploy.failed.production" {
        return Ok(false);
    }
    println!("failed at {}", failure(&crashed));
    let Some(back) = automatic_rollback(demo, &crashed).await else {
        println!("no rollback was requested");
        return Ok(false);
    };
    // The controller leaves the crash-looping pod alone even once 1.0.3 is applied over it
    // (OrderedReady): the watcher says so, and the operator asks for it to be deleted.
    let stalled_or_ended = [
        "rollout.stalled.production",
        "deploy.completed.production",
        "deploy.failed.production",
    ];
    let Some(stuck) = demo.next_of(40.0, &back, &stalled_or_ended).await else {
        return Ok(false);
    };
    if stuck.routing_key() != "rollout.stalled.production" {
        println!(
            "expected the rollback to find a stuck pod: {}",
            failure(&stuck)
        );
        return Ok(false);
    }
    println!("\n→ the operator deletes the stuck pod (conveyor unstick production)");
    let (status, reply) = demo
        .control(
            "/api/environments/production/unstick",
            OPERATOR_TOKEN,
            json!({"reason": "the pod is stuck on 1.0.5"}),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "unstick refused ({status}): {reply}");
    let Some(end) = demo.next_of(30.0, &back, &ENDS).await else {
        return Ok(false);
    };
    if end.routing_key() != "deploy.completed.production" {
        println!("the rollback failed: {}", failure(&end));
        return Ok(false);
    }
    Ok(true)
}
