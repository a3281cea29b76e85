//! The control API: an operator's hand on the wheel. Each action is authenticated, checked
//! against the pipeline and the record, and turned into an event on the bus — a pause, or a
//! deployment request with its trigger, actor and reason — that goes the way every automatic
//! deployment goes: the executors decide, under the one executor contract. The record of every
//! action is the ledger's own (it consumes the events like any other).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use conveyor::config::{Environment, Executor, Pipeline};
use conveyor::events::{DeployRequested, GitRef, ImageRef, Operation, Trigger, UpstreamCommit};
use conveyor::{Bus, Envelope, Event};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::Ledger;
use crate::auth::{Caller, Denied, OPERATOR, Operators};
use crate::store::{Action, StoreError};
use crate::timeline::{Deployment, Millis, Status, millis};

/// What the control API needs besides the record.
pub struct Control {
    /// Where control events go.
    pub bus: Bus,
    /// The environments, their executors and freeze windows.
    pub pipeline: Arc<Pipeline>,
    /// Who may act.
    pub operators: Operators,
}

/// A refused action: its status and the reason, said plainly.
#[derive(Debug)]
pub struct Refused(StatusCode, String);

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"conveyor\"".parse().expect("a valid header"),
            );
        }
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert("retry-after", "5".parse().expect("a valid header"));
        }
        r
    }
}

impl From<Denied> for Refused {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => Refused::new(StatusCode::UNAUTHORIZED, m),
            Denied::Forbidden(m) => Refused::new(StatusCode::FORBIDDEN, m),
        }
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "control API: the record could not be read");
        Refused::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<conveyor::BusError> for Refused {
    fn from(e: conveyor::BusError) -> Self {
        tracing::warn!(error = %e, "control API: the bus refused");
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("nothing was changed: {e}"),
        )
    }
}

/// Who asks and from where: the request's headers and the peer's address.
pub struct Asking {
    headers: HeaderMap,
    peer: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Asking {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        })
    }
}

impl Asking {
    /// The client address: the proxy's `X-Forwarded-For` when a proxy is trusted, else the
    /// peer.
    fn from(&self, trust_proxy: bool) -> Option<String> {
        let forwarded = trust_proxy
            .then(|| self.headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        forwarded.or_else(|| self.peer.map(|p| p.ip().to_string()))
    }

    /// A state-changing request must be JSON (a cross-site form cannot send it without the
    /// browser asking first) and must not come from another site: no cookie-borne identity
    /// (an auth proxy's) can be ridden by another page.
    fn same_site_json(&self) -> Result<(), Refused> {
        let json = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the action as Content-Type: application/json",
            ));
        }
        if self
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site")
        {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "cross-site requests may not act",
            ));
        }
        if let (Some(origin), Some(host)) = (
            self.headers.get("origin").and_then(|v| v.to_str().ok()),
            self.headers.get("host").and_then(|v| v.to_str().ok()),
        ) {
            let origin_host = origin.split("://").nth(1).unwrap_or(origin);
            if origin != "null" && origin_host != host {
                return Err(Refused::new(
                    StatusCode::FORBIDDEN,
                    format!("requests from {origin} may not act on {host}"),
                ));
            }
        }
        Ok(())
    }
}

type Shared = (Arc<Ledger>, Arc<Control>);

impl Control {
    fn operator(&self, asking: &Asking) -> Result<Caller, Refused> {
        asking.same_site_json()?;
        Ok(self.operators.require(
            &asking.headers,
            asking.from(self.operators.trusts_proxy()),
            OPERATOR,
        )?)
    }

    fn environment(&self, name: &str) -> Result<&Environment, Refused> {
        self.pipeline.environment(name).ok_or_else(|| {
            Refused::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no environment {name:?} in the pipeline (known: {})",
                    self.pipeline
                        .environments
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// The image repository `environment` runs.
    fn image_repository<'a>(&'a self, environment: &'a Environment) -> &'a str {
        self.pipeline
            .repository(&environment.repository)
            .map_or(environment.repository.as_str(), |r| r.image())
    }
}

/// What `conveyor status` and the dashboard show of one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentStatus {
    /// Name.
    pub environment: String,
    /// `awx` or `kubernetes`.
    pub executor: String,
    /// What runs there now: the newest completed deployment.
    pub current: Option<Deployment>,
    /// Deployments still moving (requested, held, running).
    pub in_flight: Vec<Deployment>,
    /// The operator's pause, if it is paused.
    pub paused: Option<Paused>,
    /// The freeze window open now, if any.
    pub frozen: Option<Frozen>,
    /// The last operator actions on it, newest first.
    pub actions: Vec<Action>,
}

/// Who paused an environment, when and why (the latch is the truth; the record names them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paused {
    /// Who.
    pub by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Since when.
    pub since: Option<Millis>,
}

/// An open freeze window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frozen {
    /// When it closes.
    pub until: Millis,
    /// Which window.
    pub reason: String,
}

/// One environment's status.
pub async fn status_of(
    ledger: &Ledger,
    control: &Control,
    environment: &Environment,
) -> Result<EnvironmentStatus, Refused> {
    let store = ledger.store();
    let name = environment.name.as_str();
    let (recent, _) = store
        .list(&crate::store::Filter {
            environment: Some(name.to_owned()),
            limit: Some(50),
            ..Default::default()
        })
        .await?;
    let paused = if conveyor::control::is_paused(&control.bus, name).await? {
        let last = store.actions(Some(name), &["pause"], 1).await?;
        Some(match last.first() {
            Some(a) => Paused {
                by: a.actor.as_ref().map(|a| a.name.clone()),
                reason: a.reason.clone(),
                since: Some(a.at),
            },
            None => Paused {
                by: None,
                reason: None,
                since: None,
            },
        })
    } else {
        None
    };
    Ok(EnvironmentStatus {
        environment: name.to_owned(),
        executor: match environment.executor {
            Executor::Awx(_) => "awx".into(),
            Executor::Kubernetes(_) => "kubernetes".into(),
        },
        current: store.current(name).await?,
        in_flight: recent
            .into_iter()
            .filter(|d| d.status.in_flight())
            .collect(),
        paused,
        frozen: environment
            .frozen_at(OffsetDateTime::now_utc())
            .map(|f| Frozen {
                until: millis(f.until),
                reason: f.reason,
            }),
        actions: store.actions(Some(name), &[], 10).await?,
    })
}

async fn statuses(
    State((ledger, control)): State<Shared>,
) -> Result<Json<Vec<EnvironmentStatus>>, Refused> {
    let mut all = Vec::new();
    for e in &control.pipeline.environments {
        all.push(status_of(&ledger, &control, e).await?);
    }
    Ok(Json(all))
}

async fn status(
    State((ledger, control)): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<EnvironmentStatus>, Refused> {
    let environment = control.environment(&name)?;
    Ok(Json(status_of(&ledger, &control, environment).await?))
}

/// Query of `GET /api/actions`.
#[derive(Debug, Deserialize)]
pub struct ActionsQuery {
    /// Only this environment.
    pub environment: Option<String>,
    /// At most this many (default 50).
    pub limit: Option<u32>,
}

async fn actions(
    State((ledger, _)): State<Shared>,
    Query(q): Query<ActionsQuery>,
) -> Result<Json<Vec<Action>>, Refused> {
    let env = q.environment.filter(|e| !e.is_empty());
    Ok(Json(
        ledger
            .store()
            .actions(env.as_deref(), &[], q.limit.unwrap_or(50))
            .await?,
    ))
}

/// Body of `POST …/pause` and `…/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Why {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

fn reason_of(reason: Option<String>) -> Option<String> {
    reason
        .map(|r| r.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty())
}

fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Refused> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

async fn pause(
    State((_, control)): State<Shared>,
    Path(name): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let caller = control.operator(&asking)?;
    let environment = control.environment(&name)?;
    let why: Why = body(&bytes)?;
    let reason = reason_of(why.reason).ok_or_else(|| {
        Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "say why it is paused: a reason is required",
        )
    })?;
    if conveyor::control::is_paused(&control.bus, &environment.name).await? {
        return Err(Refused::new(
            StatusCode::CONFLICT,
            format!("{} is paused already", environment.name),
        ));
    }
    let event =
        conveyor::control::pause(&control.bus, &environment.name, caller.actor(), &reason).await?;
    tracing::info!(environment = %environment.name, by = %caller.name, "paused");
    Ok((
        StatusCode::OK,
        Json(json!({"environment": environment.name, "paused": true, "by": caller.name, "reason": reason, "event": event.id})),
    )
        .into_response())
}

async fn resume(
    State((_, control)): State<Shared>,
    Path(name): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let caller = control.operator(&asking)?;
    let environment = control.environment(&name)?;
    let why: Why = body(&bytes)?;
    if !conveyor::control::is_paused(&control.bus, &environment.name).await? {
        return Err(Refused::new(
            StatusCode::CONFLICT,
            format!("{} is not paused", environment.name),
        ));
    }
    let reason = reason_of(why.reason);
    let event = conveyor::control::resume(
        &control.bus,
        &environment.name,
        caller.actor(),
        reason.as_deref(),
    )
    .await?;
    tracing::info!(environment = %environment.name, by = %caller.name, "resumed");
    Ok((
        StatusCode::OK,
        Json(json!({"environment": environment.name, "paused": false, "by": caller.name, "event": event.id})),
    )
        .into_response())
}

/// Body of `POST …/deploy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// `REPOSITORY:TAG` or `REPOSITORY@sha256:…`.
    #[serde(default)]
    pub image: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Override a pause or a freeze window.
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST …/redeploy` and `…/rollback`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgainBody {
    /// For a rollback: the deployment to return to (default: the completed one before the
    /// current one).
    #[serde(default)]
    pub to: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Override a pause or a freeze window.
    #[serde(default)]
    pub force: bool,
}

/// Where a requested image came from: a deployment the record knows, if any.
fn provenance(
    environment: &Environment,
    image: &ImageRef,
    source: Option<&Deployment>,
) -> (String, GitRef, Vec<UpstreamCommit>) {
    if let Some(d) = source {
        let git_ref = d
            .git_ref
            .as_deref()
            .and_then(GitRef::parse_full)
            .unwrap_or_else(|| environment.fallback_ref(image));
        let sha = d.sha.clone().unwrap_or_default();
        let upstream = d
            .commits
            .iter()
            .filter(|c| c.sha != sha)
            .map(|c| UpstreamCommit {
                repository: c.repository.clone(),
                sha: c.sha.clone(),
            })
            .collect();
        return (sha, git_ref, upstream);
    }
    (String::new(), environment.fallback_ref(image), Vec::new())
}

/// Publish the request; its accepted answer names the deployment to follow.
async fn request(
    control: &Control,
    environment: &Environment,
    image: ImageRef,
    operation: Operation,
    source: Option<&Deployment>,
) -> Result<Response, Refused> {
    if let Executor::Awx(a) = &environment.executor
        && image.tag.is_none()
    {
        return Err(Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} deploys through AWX, whose job takes a tag ({}): name the image by REPOSITORY:TAG",
                environment.name, a.image_var
            ),
        ));
    }
    let (sha, git_ref, upstream) = provenance(environment, &image, source);
    let mut operation = operation;
    operation.untracked = sha.is_empty();
    let event = Envelope::new(
        conveyor::control::SOURCE,
        Event::DeployRequested(DeployRequested {
            environment: environment.name.clone(),
            repository: environment.repository.clone(),
            sha,
            git_ref,
            image: image.clone(),
            upstream,
            // The operator's action is the newest change: it wins over what came before it.
            origin_time: Some(OffsetDateTime::now_utc()),
            operation: operation.clone(),
        }),
    );
    control.bus.publish(&event).await?;
    let deployment = Deployment::id_of(&event.correlation_id, &environment.name);
    tracing::info!(environment = %environment.name, %deployment, trigger = operation.trigger.as_str(), by = ?operation.actor.as_ref().map(|a| &a.name), image = %image.reference(), "requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "deployment": deployment,
            "correlation_id": event.correlation_id,
            "environment": environment.name,
            "image": image.reference(),
            "trigger": operation.trigger.as_str(),
            "forced": operation.forced,
        })),
    )
        .into_response())
}

fn operation(trigger: Trigger, caller: &Caller, reason: Option<String>, forced: bool) -> Operation {
    Operation {
        trigger,
        actor: Some(caller.actor()),
        reason: reason_of(reason),
        forced,
        source_deployment: None,
        untracked: false,
        replaces: None,
    }
}

async fn deploy(
    State((ledger, control)): State<Shared>,
    Path(name): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let caller = control.operator(&asking)?;
    let environment = control.environment(&name)?;
    let b: DeployBody = body(&bytes)?;
    let image =
        ImageRef::parse(&b.image).map_err(|e| Refused::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let runs = control.image_repository(environment);
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if !(same(&image.repository, runs)
        || image
            .repository
            .to_ascii_lowercase()
            .ends_with(&format!("/{}", runs.to_ascii_lowercase())))
    {
        return Err(Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{} runs {runs}, not {}", environment.name, image.repository),
        ));
    }
    // A deployment of the same image the record knows gives the commit it carries.
    let known = ledger
        .store()
        .completed(&environment.name, 100)
        .await?
        .into_iter()
        .find(|d| d.image.as_deref() == Some(image.reference().as_str()));
    let op = operation(Trigger::Manual, &caller, b.reason, b.force);
    request(&control, environment, image, op, known.as_ref()).await
}

async fn redeploy(
    State((ledger, control)): State<Shared>,
    Path(name): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let caller = control.operator(&asking)?;
    let environment = control.environment(&name)?;
    let b: AgainBody = body(&bytes)?;
    if b.to.is_some() {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "redeploy takes no target: it deploys what runs now (use rollback --to)",
        ));
    }
    let current = ledger
        .store()
        .current(&environment.name)
        .await?
        .ok_or_else(|| {
            Refused::new(
                StatusCode::CONFLICT,
                format!(
                    "nothing to redeploy: {} has no completed deployment on record",
                    environment.name
                ),
            )
        })?;
    let image = image_of(&current)?;
    let mut op = operation(Trigger::Redeploy, &caller, b.reason, b.force);
    op.source_deployment = Some(current.id.clone());
    request(&control, environment, image, op, Some(&current)).await
}

async fn rollback(
    State((ledger, control)): State<Shared>,
    Path(name): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let caller = control.operator(&asking)?;
    let environment = control.environment(&name)?;
    let b: AgainBody = body(&bytes)?;
    let completed = ledger.store().completed(&environment.name, 50).await?;
    let target = match &b.to {
        Some(to) => {
            let d = ledger.store().get(to).await?.ok_or_else(|| {
                Refused::new(StatusCode::NOT_FOUND, format!("no deployment {to:?}"))
            })?;
            if d.environment != environment.name {
                return Err(Refused::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "deployment {to} ran in {}, not in {}",
                        d.environment, environment.name
                    ),
                ));
            }
            if d.status != Status::Completed {
                return Err(Refused::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "deployment {to} is {}, and only a completed one can be returned to",
                        d.status.as_str()
                    ),
                ));
            }
            d
        }
        None => {
            let Some(current) = completed.first() else {
                return Err(Refused::new(
                    StatusCode::CONFLICT,
                    format!(
                        "nothing to roll back to: {} has no completed deployment on record",
                        environment.name
                    ),
                ));
            };
            rollback_target(&completed).cloned().ok_or_else(|| {
                Refused::new(
                    StatusCode::CONFLICT,
                    format!(
                        "nothing to roll back to: no completed deployment of {} before the current one ({}) ran another image",
                        environment.name,
                        current.image.as_deref().unwrap_or("?")
                    ),
                )
            })?
        }
    };
    let image = image_of(&target)?;
    let mut op = operation(Trigger::Rollback, &caller, b.reason, b.force);
    op.source_deployment = Some(target.id.clone());
    op.replaces = completed.first().map(|d| d.id.clone());
    request(&control, environment, image, op, Some(&target)).await
}

/// What a rollback returns to by default: of the completed deployments (newest first), the
/// newest before the current one that ran another image.
pub fn rollback_target(completed: &[Deployment]) -> Option<&Deployment> {
    let current = completed.first()?;
    completed.iter().skip(1).find(|d| d.image != current.image)
}

/// The image a recorded deployment ran, by digest when known.
fn image_of(d: &Deployment) -> Result<ImageRef, Refused> {
    d.image_ref
        .clone()
        .or_else(|| d.image.as_deref().and_then(|i| ImageRef::parse(i).ok()))
        .ok_or_else(|| {
            Refused::new(
                StatusCode::CONFLICT,
                format!("the record of {} names no image", d.id),
            )
        })
}

/// The control routes: status and audit (readable by anyone who may read), and the actions
/// (operators only).
pub fn router(ledger: Arc<Ledger>, control: Arc<Control>) -> Router {
    Router::new()
        .route("/api/status", get(statuses))
        .route("/api/status/{environment}", get(status))
        .route("/api/actions", get(actions))
        .route("/api/environments/{environment}/pause", post(pause))
        .route("/api/environments/{environment}/resume", post(resume))
        .route("/api/environments/{environment}/deploy", post(deploy))
        .route("/api/environments/{environment}/redeploy", post(redeploy))
        .route("/api/environments/{environment}/rollback", post(rollback))
        .route("/api/environments/{environment}/unstick", post(unstick))
        .route("/api/deployments/{id}/approve", post(approve))
        .route("/api/deployments/{id}/reject", post(reject))
        .with_state((ledger, control))
}

/// Body of `POST /api/deployments/{id}/approve` and `…/reject`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (required to reject).
    #[serde(default)]
    pub reason: Option<String>,
    /// Also lift the `requires` hold: it did not pass the required environment first.
    #[serde(default)]
    pub override_requires: bool,
}

/// The request a decision is about: in flight, not launched yet, in an environment that asks
/// for a decision; and a caller who may decide it.
async fn decidable<'c>(
    ledger: &Ledger,
    control: &'c Control,
    id: &str,
    caller: &Caller,
    overriding: bool,
) -> Result<(Deployment, &'c Environment), Refused> {
    let d = ledger
        .store()
        .get(id)
        .await?
        .ok_or_else(|| Refused::new(StatusCode::NOT_FOUND, format!("no deployment {id:?}")))?;
    let environment = control.environment(&d.environment)?;
    let approval = environment.approval.as_ref().filter(|a| a.required);
    if approval.is_none() && !(overriding && environment.requires.is_some()) {
        return Err(Refused::new(
            StatusCode::CONFLICT,
            format!("{} needs no approval", environment.name),
        ));
    }
    match d.status {
        Status::Requested | Status::Held => {}
        Status::Superseded => {
            return Err(Refused::new(
                StatusCode::CONFLICT,
                format!(
                    "{id} was {}: nothing to decide (the newest request is the one that runs)",
                    d.reason.as_deref().unwrap_or("superseded")
                ),
            ));
        }
        other => {
            return Err(Refused::new(
                StatusCode::CONFLICT,
                format!("{id} is {} already: nothing to decide", other.as_str()),
            ));
        }
    }
    let approvers: Vec<String> = match approval {
        Some(a) => a.approvers.clone(),
        // Lifting `requires` where no approval is configured: operators decide.
        None => vec![OPERATOR.to_owned()],
    };
    if !approvers.iter().any(|a| *a == caller.name || caller.has(a)) {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not decide deployments of {} (approvers: {})",
                caller.name,
                environment.name,
                approvers.join(", ")
            ),
        ));
    }
    let requester = d
        .operation
        .as_ref()
        .and_then(|o| o.actor.as_ref())
        .map(|a| a.name.as_str());
    if requester == Some(caller.name.as_str()) && !approval.is_some_and(|a| a.allow_self) {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} requested {id}: another approver must decide it",
                caller.name
            ),
        ));
    }
    Ok((d, environment))
}

async fn decide(
    ledger: &Ledger,
    control: &Control,
    id: &str,
    asking: &Asking,
    bytes: &[u8],
    approve: bool,
) -> Result<Response, Refused> {
    asking.same_site_json()?;
    let caller = control.operators.authenticate(
        &asking.headers,
        asking.from(control.operators.trusts_proxy()),
    )?;
    let b: Decision = body(bytes)?;
    let reason = reason_of(b.reason);
    if !approve && reason.is_none() {
        return Err(Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "say why it is rejected: a reason is required",
        ));
    }
    let (d, environment) =
        decidable(ledger, control, id, &caller, approve && b.override_requires).await?;
    let decided = conveyor::events::DeployDecided {
        environment: environment.name.clone(),
        actor: caller.actor(),
        reason: reason.clone(),
        overrides_requires: approve && b.override_requires,
    };
    let event = Envelope::new(
        conveyor::control::SOURCE,
        if approve {
            Event::DeployApproved(decided)
        } else {
            Event::DeployRejected(decided)
        },
    )
    .with_correlation_id(&d.correlation_id);
    // The record first: an approval that takes effect is always an approval on record.
    control.bus.publish(&event).await?;
    let expires = Some(conveyor::control::APPROVAL_LATCH_EXPIRES);
    if approve {
        if b.override_requires {
            control
                .bus
                .raise_latch(&conveyor::control::override_latch(&d.id), expires)
                .await?;
        }
        if environment.approval.as_ref().is_some_and(|a| a.required) {
            control
                .bus
                .raise_latch(&conveyor::control::approval_latch(&d.id), expires)
                .await?;
        }
    } else {
        control
            .bus
            .raise_latch(&conveyor::control::rejection_latch(&d.id), expires)
            .await?;
    }
    tracing::info!(deployment = %d.id, by = %caller.name, approve, "decided");
    Ok((
        StatusCode::OK,
        Json(json!({
            "deployment": d.id,
            "approved": approve,
            "by": caller.name,
            "image": d.image,
            "event": event.id,
        })),
    )
        .into_response())
}

async fn approve(
    State((ledger, control)): State<Shared>,
    Path(id): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    decide(&ledger, &control, &id, &asking, &bytes, true).await
}

async fn reject(
    State((ledger, control)): State<Shared>,
    Path(id): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    decide(&ledger, &control, &id, &asking, &bytes, false).await
}

async fn unstick(
    State((_, control)): State<Shared>,
    Path(name): Path<String>,
    asking: Asking,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let caller = control.operator(&asking)?;
    let environment = control.environment(&name)?;
    let why: Why = body(&bytes)?;
    if !environment.unstick {
        return Err(Refused::new(
            StatusCode::CONFLICT,
            format!(
                "unstick is not enabled for {} (unstick = true in the pipeline file, and pods: delete in its RBAC)",
                environment.name
            ),
        ));
    }
    let event = Envelope::new(
        conveyor::control::SOURCE,
        Event::UnstickRequested(conveyor::events::UnstickRequested {
            environment: environment.name.clone(),
            actor: caller.actor(),
            reason: reason_of(why.reason),
        }),
    );
    control.bus.publish(&event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"environment": environment.name, "event": event.id})),
    )
        .into_response())
}
