//! Registry webhooks (Docker Hub, Quay, Harbor, CNCF Distribution) → `image.pushed`.
//!
//! Pulls, deletions, scans and build notifications are answered "ignored"; an envelope that
//! carries several events (Harbor, Distribution) yields one `image.pushed` per pushed manifest.

use serde::Deserialize;

use conveyor::events::{Event, ImagePushed, ImageRef};

use crate::{BadPayload, Parsed};

/// The registries we understand, by their path segment.
pub const KINDS: &[&str] = &["dockerhub", "quay", "harbor", "distribution"];

/// Parse a webhook from registry `kind` (one of [`KINDS`]).
pub fn parse(kind: &str, body: &[u8]) -> Result<Parsed, BadPayload> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BadPayload(format!("malformed JSON: {e}")))?;
    let events = match kind {
        "dockerhub" => dockerhub(shape(kind, value)?),
        "quay" => return quay(value),
        "harbor" => return harbor(value),
        "distribution" => distribution(shape(kind, value)?),
        other => return Err(BadPayload(format!("unknown registry {other:?}"))),
    };
    Ok(into_parsed(events, kind))
}

fn into_parsed(events: Vec<Event>, kind: &str) -> Parsed {
    if events.is_empty() {
        Parsed::Ignored(format!("{kind}: no image push in this notification"))
    } else {
        Parsed::Events(events)
    }
}

fn shape<T: for<'de> Deserialize<'de>>(
    kind: &str,
    value: serde_json::Value,
) -> Result<T, BadPayload> {
    serde_json::from_value(value).map_err(|e| BadPayload(format!("invalid {kind} payload: {e}")))
}

fn pushed(
    registry: &str,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
    pusher: Option<String>,
) -> Event {
    Event::ImagePushed(ImagePushed {
        registry: registry.into(),
        image: ImageRef {
            repository,
            tag: tag.filter(|t| !t.is_empty()),
            digest: digest.filter(|d| !d.is_empty()),
        },
        pusher: pusher.filter(|p| !p.is_empty()),
        source_repository: None,
        // Docker Hub, Quay, Harbor and Distribution do not send the image's labels.
        revision: None,
    })
}

#[derive(Deserialize)]
struct DockerHub {
    push_data: DockerHubPush,
    repository: DockerHubRepo,
}

#[derive(Deserialize)]
struct DockerHubPush {
    tag: String,
    #[serde(default)]
    pusher: Option<String>,
}

#[derive(Deserialize)]
struct DockerHubRepo {
    repo_name: String,
}

fn dockerhub(d: DockerHub) -> Vec<Event> {
    vec![pushed(
        "dockerhub",
        d.repository.repo_name,
        Some(d.push_data.tag),
        None,
        d.push_data.pusher,
    )]
}

#[derive(Deserialize)]
struct QuayPush {
    #[serde(default)]
    docker_url: Option<String>,
    repository: String,
    updated_tags: Vec<String>,
}

fn quay(value: serde_json::Value) -> Result<Parsed, BadPayload> {
    if value.get("build_id").is_some() {
        return Ok(Parsed::Ignored(
            "quay: build notification (the repository push follows)".into(),
        ));
    }
    if value.get("updated_tags").is_none() {
        return Ok(Parsed::Ignored("quay: not a repository push".into()));
    }
    let p: QuayPush = shape("quay", value)?;
    let repository = p
        .docker_url
        .unwrap_or_else(|| format!("quay.io/{}", p.repository));
    let events = p
        .updated_tags
        .into_iter()
        .map(|t| pushed("quay", repository.clone(), Some(t), None, None))
        .collect();
    Ok(into_parsed(events, "quay"))
}

#[derive(Deserialize)]
struct HarborData {
    resources: Vec<HarborResource>,
    repository: HarborRepo,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    resource_url: Option<String>,
}

#[derive(Deserialize)]
struct HarborRepo {
    repo_full_name: String,
}

fn harbor(value: serde_json::Value) -> Result<Parsed, BadPayload> {
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_owned();
    let cloudevents = value.get("specversion").is_some();
    let is_push = kind == "PUSH_ARTIFACT" || kind == "harbor.artifact.pushed";
    if !is_push {
        return Ok(Parsed::Ignored(format!("harbor: {kind:?} is not a push")));
    }
    let operator = value
        .get("operator")
        .and_then(|o| o.as_str())
        .map(str::to_owned);
    let data = if cloudevents {
        value.get("data")
    } else {
        value.get("event_data")
    };
    let data: HarborData = shape("harbor", data.cloned().unwrap_or_default())?;
    let events = data
        .resources
        .into_iter()
        .map(|r| {
            // Pushing by digest sets `tag` to the digest itself: that is no tag.
            let tag = r.tag.filter(|t| !t.starts_with("sha256:"));
            let repository = r
                .resource_url
                .as_deref()
                .map(strip_reference)
                .unwrap_or_else(|| data.repository.repo_full_name.clone());
            pushed("harbor", repository, tag, r.digest, operator.clone())
        })
        .collect();
    Ok(into_parsed(events, "harbor"))
}

/// `host/ns/name@sha256:…` or `host/ns/name:tag` → `host/ns/name` (a port colon stays).
fn strip_reference(url: &str) -> String {
    let without_digest = url.split('@').next().unwrap_or(url);
    match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
        _ => without_digest.to_owned(),
    }
}

#[derive(Deserialize)]
struct DistributionEnvelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
struct DistributionEvent {
    action: String,
    target: DistributionTarget,
    #[serde(default)]
    request: Option<DistributionRequest>,
    #[serde(default)]
    actor: Option<DistributionActor>,
}

#[derive(Deserialize)]
struct DistributionTarget {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    repository: String,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct DistributionRequest {
    #[serde(default)]
    host: Option<String>,
}

#[derive(Deserialize)]
struct DistributionActor {
    #[serde(default)]
    name: Option<String>,
}

fn distribution(d: DistributionEnvelope) -> Vec<Event> {
    d.events
        .into_iter()
        .filter(|e| e.action == "push")
        .filter(|e| e.target.media_type.as_deref().is_some_and(is_manifest))
        .map(|e| {
            let repository = match e.request.and_then(|r| r.host).filter(|h| !h.is_empty()) {
                Some(host) => format!("{host}/{}", e.target.repository),
                None => e.target.repository,
            };
            pushed(
                "distribution",
                repository,
                e.target.tag,
                e.target.digest,
                e.actor.and_then(|a| a.name),
            )
        })
        .collect()
}

/// Manifests and indexes are images; layers and configs (blobs) are not.
fn is_manifest(media_type: &str) -> bool {
    media_type.contains("manifest") || media_type.contains("image.index")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_lose_tag_and_digest_but_keep_ports() {
        assert_eq!(
            strip_reference("localhost/harbor/alpine@sha256:95"),
            "localhost/harbor/alpine"
        );
        assert_eq!(
            strip_reference("harbor.example.com/example/test:latest"),
            "harbor.example.com/example/test"
        );
        assert_eq!(strip_reference("host:5000/ns/img"), "host:5000/ns/img");
        assert_eq!(strip_reference("host:5000/ns/img:v1"), "host:5000/ns/img");
    }
}
