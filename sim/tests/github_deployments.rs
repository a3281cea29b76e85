//! The GitHub simulator's deployments and statuses answer with GitHub's codes and bodies
//! (contract §6–7): 201, 202 after an auto-merge, 409 on failing required contexts, 422 on
//! validation, auto-inactivation of earlier successes, the combined commit status.

use conveyor_sim::github::GitHubSim;
use serde_json::{Value, json};

const TOKEN: &str = "ghp_sim_deployments";
const REPO: &str = "xchem/fragalysis-stack";

async fn serve(sim: &GitHubSim) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sim = sim.clone();
    tokio::spawn(async move { sim.serve(listener, std::future::pending()).await });
    url
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("user-agent", "test")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("user-agent", "test")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn setup() -> (GitHubSim, Api) {
    let sim = GitHubSim::new(TOKEN);
    sim.add_repo(REPO);
    sim.set_branch(REPO, "master", &"a".repeat(40));
    let base = serve(&sim).await;
    (
        sim,
        Api {
            http: reqwest::Client::new(),
            base,
        },
    )
}

#[tokio::test]
async fn deployment_lifecycle_and_auto_inactivation() {
    let (sim, api) = setup().await;
    let path = format!("/repos/{REPO}/deployments");
    let (code, first) = api
        .post(
            &path,
            json!({"ref": "master", "environment": "staging", "auto_merge": false,
                   "required_contexts": [], "payload": {"conveyor": {"correlation_id": "c1"}}}),
        )
        .await;
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["sha"], "a".repeat(40));
    assert_eq!(first["production_environment"], false);
    assert_eq!(first["payload"]["conveyor"]["correlation_id"], "c1");
    let id1 = first["id"].as_u64().unwrap();

    let status = |id: u64| format!("/repos/{REPO}/deployments/{id}/statuses");
    let (code, st) = api
        .post(
            &status(id1),
            json!({"state": "success", "environment_url": "https://staging.example"}),
        )
        .await;
    assert_eq!(code, 201, "{st}");
    assert_eq!(st["state"], "success");

    // A description over 140 characters is refused, and nothing is recorded.
    let (code, body) = api
        .post(
            &status(id1),
            json!({"state": "failure", "description": "x".repeat(141)}),
        )
        .await;
    assert_eq!(code, 422);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("140")
    );
    let (code, _) = api.post(&status(id1), json!({"state": "done"})).await;
    assert_eq!(code, 422);

    // A second success to the same environment makes the first inactive (auto_inactive).
    let (_, second) = api
        .post(
            &path,
            json!({"ref": &"b".repeat(40), "environment": "staging", "required_contexts": []}),
        )
        .await;
    let id2 = second["id"].as_u64().unwrap();
    api.post(&status(id2), json!({"state": "success"})).await;
    let (_, statuses) = api.get(&status(id1)).await;
    let states: Vec<&str> = statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["inactive", "success"], "newest first");

    // Lists filter by sha and environment, newest first.
    let (_, list) = api
        .get(&format!(
            "{path}?environment=staging&sha={}",
            "a".repeat(40)
        ))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = api.get(&format!("{path}?environment=staging")).await;
    assert_eq!(list[0]["id"], id2);
    let (code, _) = api.get(&format!("{path}/999")).await;
    assert_eq!(code, 404);
    assert_eq!(sim.deployments().len(), 2);
}

#[tokio::test]
async fn auto_merge_answers_202_and_required_contexts_409() {
    let (sim, api) = setup().await;
    let path = format!("/repos/{REPO}/deployments");
    sim.set_behind_default(REPO, "master");
    let (code, body) = api
        .post(&path, json!({"ref": "master", "environment": "staging"}))
        .await;
    assert_eq!(code, 202, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Auto-merged"));
    assert!(sim.deployments().is_empty(), "a 202 creates no deployment");

    // A pending commit status fails the default required contexts...
    let sha = "a".repeat(40);
    let (code, _) = api
        .post(
            &format!("/repos/{REPO}/statuses/{sha}"),
            json!({"state": "pending", "context": "ci/build"}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, body) = api
        .post(&path, json!({"ref": "master", "environment": "staging"}))
        .await;
    assert_eq!(code, 409, "{body}");
    // ... but not an explicit empty list.
    let (code, _) = api
        .post(
            &path,
            json!({"ref": "master", "environment": "staging", "required_contexts": []}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = api.post(&path, json!({"ref": "nope"})).await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn commit_statuses_combine_per_context() {
    let (sim, api) = setup().await;
    let sha = "c".repeat(40);
    let path = format!("/repos/{REPO}/statuses/{sha}");
    let post =
        |state: &str, context: &str| api.post(&path, json!({"state": state, "context": context}));
    assert_eq!(post("pending", "conveyor/staging").await.0, 201);
    assert_eq!(post("success", "conveyor/staging").await.0, 201);
    assert_eq!(post("pending", "conveyor/production").await.0, 201);
    let (_, combined) = api
        .get(&format!("/repos/{REPO}/commits/{sha}/status"))
        .await;
    assert_eq!(combined["state"], "pending");
    assert_eq!(combined["total_count"], 2);
    assert_eq!(post("failure", "conveyor/production").await.0, 201);
    let (_, combined) = api
        .get(&format!("/repos/{REPO}/commits/{sha}/status"))
        .await;
    assert_eq!(combined["state"], "failure");
    assert_eq!(post("bogus", "x").await.0, 422);
    assert_eq!(sim.commit_statuses().len(), 4);
}
