//! GitHub webhook payloads → Conveyor events: lenient structs with only the fields we route on.

use serde::Deserialize;
use time::OffsetDateTime;

use conveyor::events::{
    BuildRun, CommitInfo, Event, GitRef, ImagePushed, ImageRef, RunConclusion, RunStatus, ScmPush,
};

use crate::{BadPayload, Parsed};

/// Turn one verified delivery into events (or an explanation of why it is ignored).
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, BadPayload> {
    match event {
        "push" => push(shape(event, body)?).map(|e| Parsed::Events(vec![e])),
        "workflow_run" => workflow_run(shape(event, body)?),
        "registry_package" | "package" => package(event, body),
        "create" | "delete" => {
            let p: RefEvent = shape(event, body)?;
            Ok(Parsed::Ignored(format!(
                "{event} of {} {:?} is covered by the push event GitHub sends with it",
                p.ref_type, p.git_ref
            )))
        }
        other => {
            // Not acted on, but still a well-formed JSON document or a 400.
            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .map_err(|e| BadPayload(format!("malformed JSON: {e}")))?;
            Ok(if other == "ping" {
                Parsed::Pong
            } else {
                Parsed::Ignored(format!("event {other:?} is not one Conveyor acts on"))
            })
        }
    }
}

/// Deserialise the payload straight into the fields Conveyor reads: no intermediate JSON
/// tree, and the fields it does not read are skipped without allocating.
fn shape<T: for<'de> Deserialize<'de>>(event: &str, body: &[u8]) -> Result<T, BadPayload> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            BadPayload(format!("malformed JSON: {e}"))
        } else {
            BadPayload(format!("invalid {event} payload: {e}"))
        }
    })
}

#[derive(Deserialize)]
struct Repo {
    full_name: String,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    login: Option<String>,
}

#[derive(Deserialize)]
struct RefEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    repository: Repo,
    #[serde(default)]
    pusher: Option<Named>,
    #[serde(default)]
    head_commit: Option<HeadCommit>,
    #[serde(default)]
    commits: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct HeadCommit {
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn push(p: Push) -> Result<Event, BadPayload> {
    let git_ref = GitRef::parse_full(&p.git_ref).ok_or_else(|| {
        BadPayload(format!(
            "push ref {:?} is neither refs/heads/ nor refs/tags/",
            p.git_ref
        ))
    })?;
    Ok(Event::ScmPush(ScmPush {
        repository: p.repository.full_name,
        git_ref,
        before: p.before,
        after: p.after,
        created: p.created,
        deleted: p.deleted,
        forced: p.forced,
        pusher: p.pusher.and_then(|n| n.name.or(n.login)),
        head_commit: p.head_commit.map(|c| CommitInfo {
            sha: c.id,
            timestamp: c.timestamp.as_deref().and_then(parse_time),
            message: c
                .message
                .map(|m| m.lines().next().unwrap_or_default().to_owned()),
        }),
        commit_count: p.commits.len(),
    }))
}

#[derive(Deserialize)]
struct WorkflowRunDelivery {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repo,
    /// The workflow itself: its name, when the run's is empty.
    #[serde(default)]
    workflow: Option<Workflow>,
}

#[derive(Deserialize)]
struct Workflow {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowRun {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    run_number: Option<u64>,
    #[serde(default)]
    run_attempt: Option<u64>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    head_branch: Option<String>,
    head_sha: String,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    display_title: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    head_repository: Option<Repo>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

fn workflow_run(d: WorkflowRunDelivery) -> Result<Parsed, BadPayload> {
    let r = d.workflow_run;
    let head_repository = r
        .head_repository
        .map(|h| h.full_name)
        .filter(|h| !h.eq_ignore_ascii_case(&d.repository.full_name));
    let run = BuildRun {
        repository: d.repository.full_name,
        // A run's `name` may be empty (GitHub sends `""` for some triggers); the workflow's own
        // name is what pipelines match on.
        workflow_name: r
            .name
            .filter(|n| !n.is_empty())
            .or_else(|| d.workflow.and_then(|w| w.name))
            .unwrap_or_default(),
        workflow_path: r.path,
        run_id: r.id,
        run_number: r.run_number,
        run_attempt: r.run_attempt,
        trigger: r.event,
        head_branch: r.head_branch,
        head_sha: r.head_sha,
        status: RunStatus::from(r.status.as_str()),
        conclusion: r.conclusion.as_deref().map(RunConclusion::from),
        display_title: r.display_title,
        html_url: r.html_url,
        head_repository,
        created_at: r.created_at.as_deref().and_then(parse_time),
        updated_at: r.updated_at.as_deref().and_then(parse_time),
    };
    let event = match d.action.as_str() {
        "requested" | "in_progress" => Event::BuildStarted(run),
        "completed" => match run.conclusion {
            Some(RunConclusion::Success) => Event::BuildSucceeded(run),
            Some(_) => Event::BuildFailed(run),
            // GitHub's own corpus has one (status `queued`): whatever it is, it is no build's
            // end, and a 400 would only paint the hook's delivery log red.
            None => {
                return Ok(Parsed::Ignored(format!(
                    "workflow_run {} is \"completed\" without a conclusion (status {:?}): not a build's end",
                    run.run_id, run.status
                )));
            }
        },
        other => {
            return Ok(Parsed::Ignored(format!(
                "workflow_run action {other:?} is not acted on"
            )));
        }
    };
    Ok(Parsed::Events(vec![event]))
}

#[derive(Deserialize)]
struct PackageDelivery {
    action: String,
    #[serde(alias = "registry_package")]
    package: Package,
    #[serde(default)]
    repository: Option<Repo>,
    #[serde(default)]
    sender: Option<Named>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    package_type: Option<String>,
    #[serde(default)]
    registry: Option<Registry>,
    package_version: PackageVersion,
}

#[derive(Deserialize)]
struct Registry {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct PackageVersion {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    package_url: Option<String>,
    #[serde(default)]
    container_metadata: Option<ContainerMetadata>,
    /// The commit GitHub tied the package to (a release's, or the workflow's).
    #[serde(default)]
    target_oid: Option<String>,
}

#[derive(Deserialize)]
struct ContainerMetadata {
    #[serde(default)]
    tag: Option<ContainerTag>,
    #[serde(default)]
    labels: Option<ContainerLabels>,
}

/// The image's labels as GitHub lists them: a few well-known ones by short name, and all of
/// them by their OCI names.
#[derive(Deserialize)]
struct ContainerLabels {
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    all_labels: std::collections::BTreeMap<String, serde_json::Value>,
}

impl PackageVersion {
    /// The commit the image was built from: its OCI `revision` label, else the package's
    /// target commit — only a full sha, as anything shorter names no commit for certain.
    fn revision(&self) -> Option<String> {
        let labels = self
            .container_metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref());
        let label = labels.and_then(|l| l.revision.clone());
        let oci = labels
            .and_then(|l| l.all_labels.get("org.opencontainers.image.revision"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        [label, oci, self.target_oid.clone()]
            .into_iter()
            .flatten()
            .map(|s| s.to_ascii_lowercase())
            .find(|s| is_full_sha(s))
    }
}

#[derive(Deserialize)]
struct ContainerTag {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    digest: Option<String>,
}

fn package(event: &str, body: &[u8]) -> Result<Parsed, BadPayload> {
    let d: PackageDelivery = shape(event, body)?;
    if d.action != "published" {
        return Ok(Parsed::Ignored(format!(
            "{event} action {:?} is not a push",
            d.action
        )));
    }
    let is_container = d
        .package
        .registry
        .as_ref()
        .and_then(|r| r.kind.as_deref())
        .is_some_and(|k| k.eq_ignore_ascii_case("container"))
        || d.package
            .package_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("container"));
    if !is_container {
        return Ok(Parsed::Ignored(format!("{event}: not a container image")));
    }
    let v = d.package.package_version;
    let revision = v.revision();
    let url = v
        .package_url
        .ok_or_else(|| BadPayload(format!("{event}: container package without package_url")))?;
    let repository = url.trim_end_matches(':').to_ascii_lowercase();
    let tag = v.container_metadata.as_ref().and_then(|m| m.tag.as_ref());
    // Only a well-formed digest is an image's identity: a malformed one would be deployed by.
    let digest = tag
        .and_then(|t| t.digest.clone())
        .filter(|d| is_sha256_digest(d))
        .or_else(|| v.version.filter(|v| is_sha256_digest(v)));
    let tag = tag.and_then(|t| t.name.clone()).filter(|t| !t.is_empty());
    Ok(Parsed::Events(vec![Event::ImagePushed(ImagePushed {
        registry: "ghcr".into(),
        image: ImageRef {
            repository,
            tag,
            digest,
        },
        pusher: d.sender.and_then(|s| s.login.or(s.name)),
        source_repository: d.repository.map(|r| r.full_name),
        revision,
    })]))
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}
/// 40 lowercase hex digits: a whole git commit id.
fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `sha256:` and 64 lowercase hex digits, as OCI writes a digest.
fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/payloads/github/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn one(event: &str, payload: &Value) -> Event {
        match parse(event, &serde_json::to_vec(payload).unwrap()) {
            Ok(Parsed::Events(mut events)) if events.len() == 1 => events.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_without_a_name_is_named_after_its_workflow() {
        let mut payload = fixture("workflow_run.completed.failure.json");
        payload["workflow_run"]["name"] = Value::from("");
        payload["workflow"]["name"] = Value::from("build main");
        match one("workflow_run", &payload) {
            Event::BuildFailed(run) | Event::BuildSucceeded(run) => {
                assert_eq!(run.workflow_name, "build main")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_digest_never_wins_over_a_valid_one() {
        let valid = "sha256:7915fd433981348325199f71a39e01ad0297a5120f5b380ed4fd2261a7d83031";
        let mut payload = fixture("registry_package.published.json");
        let version = &mut payload["registry_package"]["package_version"];
        version["container_metadata"]["tag"]["digest"] = Value::from("sha256:not-hex");
        version["version"] = Value::from(valid);
        match one("registry_package", &payload) {
            Event::ImagePushed(p) => assert_eq!(p.image.digest.as_deref(), Some(valid)),
            other => panic!("{other:?}"),
        }
        let version = &mut payload["registry_package"]["package_version"];
        version["version"] = Value::from("sha256:1234");
        match one("registry_package", &payload) {
            Event::ImagePushed(p) => {
                assert_eq!(p.image.digest, None, "no digest is better than a wrong one")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ghcr_image_names_its_commit_by_label_else_by_target_and_never_by_a_short_sha() {
        let revision = |payload: &Value| match one("registry_package", payload) {
            Event::ImagePushed(p) => p.revision,
            other => panic!("{other:?}"),
        };
        let mut payload = fixture("registry_package.published.json");
        let target = payload["registry_package"]["package_version"]["target_oid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(revision(&payload), Some(target.clone()));
        let labelled = "0123456789abcdef0123456789abcdef01234567";
        let version = &mut payload["registry_package"]["package_version"];
        version["container_metadata"]["labels"] = serde_json::json!({
            "revision": "",
            "all_labels": {"org.opencontainers.image.revision": labelled.to_uppercase()},
        });
        assert_eq!(revision(&payload).as_deref(), Some(labelled));
        let version = &mut payload["registry_package"]["package_version"];
        version["container_metadata"]["labels"]["all_labels"] = serde_json::json!({});
        version["target_oid"] = Value::from("4c4a97c");
        assert_eq!(
            revision(&payload),
            None,
            "a short sha names no commit for certain"
        );
    }
}
