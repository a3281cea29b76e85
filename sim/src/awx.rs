//! An AWX simulator following `docs/simulators.md` (AWX): templates by exact name, launch with
//! `ignored_fields`, the job state machine with `allow_simultaneous=false` queuing, stdout,
//! cancel, 301 for a missing trailing slash, Basic and Bearer auth, notifications, and faults.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::routing::get;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod http;
mod jobs;
mod metadata;
mod session;

use http::*;

/// A job template.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    /// Name (unique per organization only).
    pub name: String,
    /// Organization id.
    pub organization: u64,
    /// "Prompt on launch" for variables.
    pub ask_variables_on_launch: bool,
    /// Variables a survey asks for (accepted on launch even without the prompt flag).
    pub survey_variables: Vec<String>,
    /// Jobs of this template may run at once (AWX default: false, so they queue).
    pub allow_simultaneous: bool,
    /// The template's own extra vars (defaults).
    pub extra_vars: Map<String, Value>,
}

impl TemplateSpec {
    /// A template with AWX's defaults and variables prompted on launch.
    pub fn prompting(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            organization: 1,
            ask_variables_on_launch: true,
            survey_variables: Vec::new(),
            allow_simultaneous: false,
            extra_vars: Map::new(),
        }
    }
}

/// What a job's playbook run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookResult {
    /// `successful`, `failed` or `error`.
    pub status: String,
    /// Stdout lines.
    pub stdout: Vec<String>,
    /// `job_explanation` (e.g. for `error`).
    pub explanation: String,
    /// The task that failed, as its `runner_on_failed` job event tells it.
    pub failed_task: Option<FailedTask>,
}

/// A failed task, as AWX's job events carry it (`JobEventSerializer`: `event`, `play`, `role`,
/// `task`, `host_name`, `event_data.task_action`, `event_data.res.msg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    /// The play.
    pub play: String,
    /// The role the task belongs to (empty for a task of the playbook itself).
    pub role: String,
    /// The task's name.
    pub task: String,
    /// The host it failed on.
    pub host: String,
    /// The module (`event_data.task_action`).
    pub action: String,
    /// The module's message (`event_data.res.msg`).
    pub msg: String,
}

impl PlaybookResult {
    /// A successful run with a plausible stdout.
    pub fn successful() -> Self {
        Self {
            status: "successful".into(),
            stdout: vec![
                "PLAY [Version change] **********".into(),
                "TASK [fragalysis-stack : Re-apply the StatefulSet] **********".into(),
                "changed: [localhost]".into(),
                "PLAY RECAP **********".into(),
                "localhost : ok=12 changed=1 unreachable=0 failed=0".into(),
            ],
            explanation: String::new(),
            failed_task: None,
        }
    }

    /// A failed run whose last lines say why.
    pub fn failed(why: &str) -> Self {
        Self {
            status: "failed".into(),
            stdout: vec![
                "PLAY [Version change] **********".into(),
                "TASK [fragalysis-stack : Wait for stack-1] **********".into(),
                format!("fatal: [localhost]: FAILED! => {{\"msg\": \"{why}\"}}"),
                "PLAY RECAP **********".into(),
                "localhost : ok=9 changed=1 unreachable=0 failed=1".into(),
            ],
            explanation: String::new(),
            failed_task: Some(FailedTask {
                play: "Version change".into(),
                role: "fragalysis-stack".into(),
                task: "Wait for stack-1".into(),
                host: "localhost".into(),
                action: "kubernetes.core.k8s_info".into(),
                msg: why.into(),
            }),
        }
    }
}

/// What a playbook sees of its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Job id.
    pub job_id: u64,
    /// Template name.
    pub template: String,
    /// The job's extra vars (template defaults merged with the accepted launch vars).
    pub extra_vars: Map<String, Value>,
}

/// A pluggable playbook: what "running the job" does (the e2e setup patches the simulated
/// StatefulSet through the Kubernetes API, as the real Ansible role does).
pub type Playbook = Arc<dyn Fn(JobContext) -> futures_lite::BoxedPlaybook + Send + Sync + 'static>;

/// Boxed future type for playbooks.
pub mod futures_lite {
    /// The future a playbook returns.
    pub type BoxedPlaybook =
        std::pin::Pin<Box<dyn std::future::Future<Output = super::PlaybookResult> + Send>>;
}

/// How jobs finish.
#[derive(Clone)]
pub enum Pace {
    /// Running jobs finish only through [`AwxSim::finish_job`].
    Manual,
    /// Running jobs run `playbook` (or succeed after `run_for`) on their own.
    Auto {
        /// How long a job runs when there is no playbook.
        run_for: Duration,
        /// The playbook, if any.
        playbook: Option<Playbook>,
    },
}

/// A fault answered instead of the real response, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// nginx's HTML 502.
    Html502,
    /// nginx's HTML 504.
    Html504,
    /// Django's JSON 500.
    Json500,
    /// Answer normally after a delay.
    Slow(Duration),
    /// For a launch: create the job, then answer an HTML 504 (the connection "dropped" after
    /// the launch was accepted).
    AcceptThenDrop,
    /// For a launch: create the job, then wait this long before answering (time to kill the
    /// client between AWX's commit and its answer).
    AcceptThenHang(Duration),
    /// 301 to `/migrations_notran/`, as AWX answers every request during a migration.
    Migrating,
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Status answered.
    pub status: u16,
}

/// A job as the simulator holds it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id.
    pub id: u64,
    /// Template id.
    pub template_id: u64,
    /// Status.
    pub status: String,
    /// Created.
    pub created: OffsetDateTime,
    /// Running since.
    pub started: Option<OffsetDateTime>,
    /// Terminal since.
    pub finished: Option<OffsetDateTime>,
    /// Explanation.
    pub job_explanation: String,
    /// Extra vars (as the job stores them).
    pub extra_vars: Map<String, Value>,
    /// Stdout lines.
    pub stdout: Vec<String>,
    /// The task that failed, if one did.
    pub failed_task: Option<FailedTask>,
    pending_since: tokio::time::Instant,
}

impl Job {
    fn active(&self) -> bool {
        matches!(
            self.status.as_str(),
            "new" | "pending" | "waiting" | "running"
        )
    }
}

#[derive(Debug, Clone)]
struct Template {
    id: u64,
    spec: TemplateSpec,
}

struct Inner {
    prefix: String,
    username: String,
    password: String,
    tokens: Vec<(String, bool)>,
    templates: Vec<Template>,
    jobs: Vec<Job>,
    next_id: u64,
    faults: crate::plumbing::FaultScript<Fault>,
    log: Vec<LoggedRequest>,
    pace: Pace,
    explain_after: Duration,
    notify: Option<(String, String)>,
    capacity: Option<usize>,
    /// Logged-in sessions (`awx_sessionid` cookies).
    sessions: std::collections::HashSet<String>,
}

/// The simulator; clones share state.
#[derive(Clone)]
pub struct AwxSim {
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
    latency: crate::plumbing::Latency,
}

/// A time as Django REST framework writes it: microseconds (none when zero), `Z` for UTC.
fn ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let micros = t.microsecond();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    let whole = t.format(&Rfc3339).unwrap_or_default();
    match micros {
        0 => whole,
        m => format!("{}.{m:06}Z", whole.trim_end_matches('Z')),
    }
}

impl AwxSim {
    /// An AWX at `prefix` (`/api/v2` or `/api/controller/v2`) with one user and one write token.
    pub fn new(prefix: &str, username: &str, password: &str, token: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                prefix: prefix.trim_end_matches('/').to_owned(),
                username: username.to_owned(),
                password: password.to_owned(),
                tokens: vec![(token.to_owned(), true)],
                templates: Vec::new(),
                jobs: Vec::new(),
                next_id: 960,
                faults: Default::default(),
                log: Vec::new(),
                pace: Pace::Manual,
                explain_after: Duration::from_secs(30),
                notify: None,
                capacity: None,
                sessions: Default::default(),
            })),
            http: reqwest::Client::new(),
            latency: Default::default(),
        }
    }

    /// Answer every API request after a time between `min` and `max`, as an AWX across a
    /// network does (benchmarks measure parallelism with it).
    pub fn set_latency(&self, min: Duration, max: Duration) {
        self.latency.set(min, max);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        conveyor::sync::lock(&self.inner)
    }

    /// Add a token that may only read (403 on POST).
    pub fn add_read_token(&self, token: &str) {
        self.lock().tokens.push((token.to_owned(), false));
    }

    /// Add a template; returns its id.
    pub fn add_template(&self, spec: TemplateSpec) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.templates.push(Template { id, spec });
        id
    }

    /// How jobs finish.
    pub fn set_pace(&self, pace: Pace) {
        self.lock().pace = pace;
    }

    /// How long a blocked job waits before `job_explanation` says why (AWX: 30 s).
    pub fn set_explain_after(&self, d: Duration) {
        self.lock().explain_after = d;
    }

    /// Limit how many jobs may run at once (`Some(0)`: none start, as when every instance is
    /// busy); `None` is unlimited.
    pub fn set_capacity(&self, capacity: Option<usize>) {
        self.lock().capacity = capacity;
    }

    /// Send notifications (job started, job finished) to `url` with `X-Conveyor-Token: token`.
    pub fn notify_to(&self, url: impl Into<String>, token: impl Into<String>) {
        self.lock().notify = Some((url.into(), token.into()));
    }

    /// Answer the next request whose path contains `path_contains` with `fault`, once.
    pub fn inject(&self, path_contains: Option<&str>, fault: Fault) {
        self.lock().faults.push(None, path_contains, fault);
    }

    /// Like [`AwxSim::inject`], for requests with this method only.
    pub fn inject_on(&self, method: Method, path_contains: &str, fault: Fault) {
        self.lock()
            .faults
            .push(Some(method), Some(path_contains), fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Every job so far.
    pub fn jobs(&self) -> Vec<Job> {
        self.lock().jobs.clone()
    }

    /// Finish a running (or pending) job with `result`, then let queued jobs move.
    pub fn finish_job(
        &self,
        id: u64,
        result: PlaybookResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let done = {
                let mut s = self.lock();
                match s.jobs.iter_mut().find(|j| j.id == id && j.active()) {
                    Some(j) => {
                        let now = OffsetDateTime::now_utc();
                        j.started.get_or_insert(now);
                        j.status = result.status.clone();
                        j.finished = Some(now);
                        j.stdout = result.stdout;
                        j.job_explanation = result.explanation;
                        j.failed_task = result.failed_task;
                        true
                    }
                    None => false,
                }
            };
            if done {
                self.notify(id).await;
                self.task_manager().await;
            }
        })
    }

    /// Serve on `listener` until `shutdown`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::plumbing::serve(self.router(), listener, shutdown).await
    }

    /// The router.
    pub fn router(&self) -> Router {
        let p = self.lock().prefix.clone();
        use metadata::{Endpoint, options};
        let described = |e: Endpoint| move || async move { options(e) };
        Router::new()
            .route("/api/", get(api_root))
            .route("/api/login/", get(session::login_form).post(session::login))
            .route("/api/logout/", get(session::logout).post(session::logout))
            .route(&format!("{p}/"), get(metadata::version_root))
            .route(&format!("{p}/ping/"), get(ping))
            .route(&format!("{p}/me/"), get(me))
            .route(
                &format!("{p}/job_templates/"),
                get(list_templates).options(described(Endpoint::Templates)),
            )
            .route(
                &format!("{p}/job_templates/{{id}}/"),
                get(get_template).options(described(Endpoint::Template)),
            )
            .route(
                &format!("{p}/job_templates/{{id}}/launch/"),
                get(launch_info)
                    .post(launch)
                    .options(described(Endpoint::Launch)),
            )
            .route(
                &format!("{p}/job_templates/{{id}}/jobs/"),
                get(template_jobs).options(described(Endpoint::Jobs)),
            )
            .route(
                &format!("{p}/jobs/"),
                get(list_jobs).options(described(Endpoint::Jobs)),
            )
            .route(
                &format!("{p}/jobs/{{id}}/"),
                get(get_job).options(described(Endpoint::Job)),
            )
            .route(
                &format!("{p}/jobs/{{id}}/stdout/"),
                get(stdout).options(described(Endpoint::Stdout)),
            )
            .route(
                &format!("{p}/jobs/{{id}}/job_events/"),
                get(job_events).options(described(Endpoint::Events)),
            )
            .route(
                &format!("{p}/jobs/{{id}}/cancel/"),
                get(can_cancel)
                    .post(cancel)
                    .options(described(Endpoint::Cancel)),
            )
            // Faults, authentication and the request log, for every route (not the missing-
            // slash fallback: Django redirects before any authentication).
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                gate_layer,
            ))
            .fallback(fallback)
            .layer(axum::middleware::from_fn(
                crate::plumbing::finish_what_was_received,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.latency.clone(),
                crate::plumbing::with_latency,
            ))
            .with_state(self.clone())
    }
}
