//! The approval scenario: production takes only what passed staging, and a release manager
//! approves each deployment. A commit reaches staging; tag 1.0.3 on it waits for its soak and
//! for the approval — which the demo operator may not give, and the release manager gives;
//! tag 1.0.4 on a commit staging never ran is held and rejected.

use conveyor::Envelope;
use conveyor::config::{Approval, Pipeline, Requires};
use conveyor::events::Event;
use serde_json::json;

use super::{Demo, STACK};
use crate::stack::{APPROVER_NAME, APPROVER_TOKEN, OPERATOR_TOKEN};

/// The role that approves production deployments in this story.
pub const ROLE: &str = "release-manager";
const SOAK_SECS: u64 = 2;

/// Production as this story runs it: after staging, with a soak, and approved.
pub fn configure(pipeline: &mut Pipeline) {
    let Some(production) = pipeline
        .environments
        .iter_mut()
        .find(|e| e.name == "production")
    else {
        return;
    };
    println!(
        "For this story production requires the commit to have completed in staging {SOAK_SECS} s before, and an approval by a {ROLE}.\n"
    );
    production.requires = Some(Requires {
        environment: "staging".into(),
        soak_secs: SOAK_SECS,
    });
    production.approval = Some(Approval {
        required: true,
        approvers: vec![ROLE.into()],
        allow_self: false,
        expires_secs: 3600,
    });
}

fn is_request_for(e: &Envelope, environment: &str, tag: Option<&str>) -> bool {
    matches!(&e.event, Event::DeployRequested(r)
        if r.environment == environment && (tag.is_none() || r.image.tag.as_deref() == tag))
}

/// Play it; `Ok(true)` when each step happened as it should.
pub async fn play(demo: &mut Demo) -> anyhow::Result<bool> {
    Ok(approved(demo).await? && rejected(demo).await?)
}

/// A commit soaks on staging, its tag waits for an approval, the operator may not give it,
/// the release manager does.
async fn approved(demo: &mut Demo) -> anyhow::Result<bool> {
    let commit = conveyor_sim::github::fake_sha(STACK, "reviewed-commit");
    println!("→ a commit lands on xchem/fragalysis-stack@master: staging deploys it");
    demo.push_stack("master", false, &commit).await?;
    let Some(staged) = demo
        .until(demo.budget(10.0), |e| is_request_for(e, "staging", None))
        .await
    else {
        return Ok(false);
    };
    if demo
        .next_of(20.0, &staged, &["deploy.completed.staging"])
        .await
        .is_none()
    {
        return Ok(false);
    }

    println!(
        "\n→ tag 1.0.3 is pushed on that commit: production waits for the soak, then for an approval"
    );
    demo.push_stack("1.0.3", true, &commit).await?;
    let Some(release) = demo
        .until(demo.budget(10.0), |e| {
            is_request_for(e, "production", Some("1.0.3"))
        })
        .await
    else {
        return Ok(false);
    };
    if demo
        .next_of(10.0, &release, &["deploy.awaiting_approval.production"])
        .await
        .is_none()
    {
        return Ok(false);
    }
    let id = conveyor::events::deployment_id(&release.correlation_id, "production");
    let approve = format!("/api/deployments/{id}/approve");
    println!("\n→ the demo operator tries to approve it (conveyor approve {id})");
    let (status, reply) = demo.control(&approve, OPERATOR_TOKEN, json!({})).await?;
    println!(
        "refused ({status}): {}",
        reply["error"].as_str().unwrap_or("?")
    );
    if status != reqwest::StatusCode::FORBIDDEN {
        return Ok(false);
    }
    println!("\n→ {APPROVER_NAME}, a {ROLE}, approves it");
    let (status, reply) = demo
        .control(
            &approve,
            APPROVER_TOKEN,
            json!({"reason": "release notes checked"}),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "approve refused ({status}): {reply}");
    if demo
        .next_of(20.0, &release, &["deploy.completed.production"])
        .await
        .is_none()
    {
        return Ok(false);
    }
    println!("approved and deployed: production runs 1.0.3");
    Ok(true)
}

/// A tag on a commit staging never ran is held, and the release manager rejects it.
async fn rejected(demo: &mut Demo) -> anyhow::Result<bool> {
    println!("\n→ tag 1.0.4 is pushed on a commit staging never ran");
    demo.push_tag("1.0.4").await?;
    let Some(unreviewed) = demo
        .until(demo.budget(10.0), |e| {
            is_request_for(e, "production", Some("1.0.4"))
        })
        .await
    else {
        return Ok(false);
    };
    if demo
        .next_of(10.0, &unreviewed, &["deploy.held.production"])
        .await
        .is_none()
    {
        return Ok(false);
    }
    let id = conveyor::events::deployment_id(&unreviewed.correlation_id, "production");
    println!("\n→ {APPROVER_NAME} rejects it (conveyor reject {id} --reason …)");
    let (status, reply) = demo
        .control(
            &format!("/api/deployments/{id}/reject"),
            APPROVER_TOKEN,
            json!({"reason": "not through staging"}),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "reject refused ({status}): {reply}");
    let ends = ["deploy.failed.production", "deploy.launched.production"];
    let Some(end) = demo.next_of(10.0, &unreviewed, &ends).await else {
        return Ok(false);
    };
    let tags = demo.launched_tags();
    println!("rejected: 1.0.4 never reached production (AWX jobs: {tags:?})");
    Ok(end.routing_key() == "deploy.failed.production"
        && tags
            .iter()
            .filter(|t| t.starts_with("1.0."))
            .eq(["1.0.3"].iter()))
}
