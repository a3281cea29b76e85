//! The GitHub client against the simulator over HTTP: pagination, credentials, name lookup.

use conveyor::config::Secret;
use conveyor::retry::Policy;
use conveyor_build_trigger::github::{GitHub, GitHubError};
use conveyor_sim::github::{GitHubSim, WorkflowSpec};

const TOKEN: &str = "ghp_client_test_token";

async fn serve(sim: &GitHubSim) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    url
}

fn sim_with_workflows(n: usize) -> GitHubSim {
    let sim = GitHubSim::new(TOKEN);
    sim.add_repo("o/big");
    for i in 0..n {
        sim.add_workflow(
            "o/big",
            WorkflowSpec {
                name: format!("workflow {i}"),
                path: format!(".github/workflows/w{i}.yaml"),
                dispatch_inputs: Some(vec![]),
            },
        );
    }
    sim
}

#[tokio::test]
async fn finds_a_workflow_on_a_later_page_by_name_or_file_and_caches_it() {
    let sim = sim_with_workflows(230);
    let gh = GitHub::new(&serve(&sim).await, Secret::new(TOKEN), Policy::HTTP);
    let w = gh.workflow("o/big", "workflow 229").await.unwrap();
    assert_eq!(w.path, ".github/workflows/w229.yaml");
    let pages = sim
        .requests()
        .iter()
        .filter(|r| r.uri.contains("/workflows?"))
        .count();
    assert_eq!(pages, 3, "230 workflows at 100 per page");
    let by_file = gh.workflow("o/big", "w150.yaml").await.unwrap();
    assert_eq!(by_file.name, "workflow 150");
    gh.workflow("o/big", "workflow 229").await.unwrap();
    let pages_after = sim
        .requests()
        .iter()
        .filter(|r| r.uri.contains("/workflows?"))
        .count();
    assert_eq!(
        pages_after,
        3 + 2,
        "the second name walked two pages, the cached one none"
    );

    let missing = gh.workflow("o/big", "nope").await.unwrap_err();
    assert!(
        missing.to_string().contains("no workflow named \"nope\""),
        "{missing}"
    );
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_never_echo_the_token() {
    let sim = sim_with_workflows(1);
    let url = serve(&sim).await;
    let gh = GitHub::new(&url, Secret::new("ghp_wrong_token_value"), Policy::HTTP);
    let e = gh.workflow("o/big", "workflow 0").await.unwrap_err();
    assert!(
        matches!(e, GitHubError::Rejected { status: 401, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("Bad credentials"));
    assert!(!format!("{e} {e:?}").contains("ghp_wrong_token_value"));
    assert_eq!(sim.requests().len(), 1, "a 401 is not retried");
}
