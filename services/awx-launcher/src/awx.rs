//! The AWX REST client: templates by exact name, the prompt check, launch, jobs, stdout, cancel.
//! Paths always end in `/` and redirects are never followed (a followed 301 turns a launch POST
//! into a GET that launches nothing); only GETs are retried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use conveyor::config::Secret;
use conveyor::events::JobStatus;
use conveyor::retry::{Classify, Policy, Transience};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// How to authenticate.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: Bearer` (OAuth2 or gateway token).
    Token(Secret),
    /// `Authorization: Basic`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

/// A failed AWX call, classified. Never contains credentials.
#[derive(Debug, thiserror::Error)]
pub enum AwxError {
    /// AWX refused and will refuse again (400, 401, 403, 404, 405, …).
    #[error("AWX answered {status} to {what}: {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Which call.
        what: String,
        /// AWX's `detail` (or the whole error body).
        detail: String,
    },
    /// A redirect: never followed (AWX redirects during migrations, and a followed POST would
    /// silently become a GET).
    #[error("AWX redirected {what} to {location:?}; not following it")]
    Redirected {
        /// Which call.
        what: String,
        /// Where to.
        location: String,
    },
    /// 5xx (JSON or an HTML page from the proxy), a timeout or a network error.
    #[error("AWX unavailable for {what}: {message}")]
    Unavailable {
        /// Which call.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The broker could not say whether the environment is held (nothing was sent to AWX).
    #[error(transparent)]
    Hold(#[from] conveyor::executor::HoldError),
}

impl AwxError {
    /// The HTTP status AWX answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AwxError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Classify for AwxError {
    fn transience(&self) -> Transience {
        match self {
            AwxError::Rejected { .. } => Transience::Permanent,
            // A redirect means a migration in progress or a wrong base URL; both show in the
            // reason, and the first passes.
            AwxError::Redirected { .. } | AwxError::Unavailable { .. } | AwxError::Hold(_) => {
                Transience::Transient(None)
            }
        }
    }
}

/// A job template's id and the flags Conveyor checks.
#[derive(Debug, Clone, Deserialize)]
pub struct Template {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
}

/// What `GET …/launch/` says the template accepts.
#[derive(Debug, Clone, Deserialize)]
pub struct LaunchInfo {
    /// "Prompt on launch" for variables.
    #[serde(default)]
    pub ask_variables_on_launch: bool,
    /// Survey enabled.
    #[serde(default)]
    pub survey_enabled: bool,
    /// Variables the survey requires.
    #[serde(default)]
    pub variables_needed_to_start: Vec<String>,
    /// Passwords that must be given.
    #[serde(default)]
    pub passwords_needed_to_start: Vec<String>,
    /// An inventory must be given.
    #[serde(default)]
    pub inventory_needed_to_start: bool,
}

/// A job.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// Id.
    pub id: u64,
    /// Status.
    pub status: JobStatus,
    /// When created.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    /// Seconds running.
    #[serde(default)]
    pub elapsed: f64,
    /// Why it waits or failed.
    #[serde(default)]
    pub job_explanation: String,
    /// The template.
    #[serde(default)]
    pub job_template: Option<u64>,
    /// Extra vars, a JSON (or YAML) string.
    #[serde(default)]
    pub extra_vars: String,
    /// Host-relative job URL.
    #[serde(default)]
    pub url: String,
}

impl Job {
    /// The job reached `successful`, `failed`, `error` or `canceled`.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// The job can still run (AWX's `CAN_CANCEL`).
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }

    /// The job's extra vars as an object (empty when they are not JSON).
    pub fn vars(&self) -> Map<String, Value> {
        match serde_json::from_str::<Value>(&self.extra_vars) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// The answer to a launch.
#[derive(Debug, Clone)]
pub struct Launched {
    /// The job id.
    pub job_id: u64,
    /// What AWX dropped instead of using (must be empty).
    pub ignored_fields: Map<String, Value>,
}

/// Pages of 50 jobs [`AwxClient::find_job`] reads at most: a re-run of a weeks-old build must
/// not walk a template's whole history on every look.
pub const FIND_PAGES: u32 = 20;

/// The client.
pub struct AwxClient {
    http: reqwest::Client,
    origin: String,
    prefix: String,
    credentials: Credentials,
    templates: Mutex<HashMap<String, Template>>,
}

impl AwxClient {
    /// A client for the AWX at `url` (origin, e.g. `https://awx.example`) with API `prefix`,
    /// giving up on a request unanswered after `timeout`.
    pub fn new(url: &str, prefix: &str, credentials: Credentials, timeout: Duration) -> Self {
        let http = conveyor::http::client(&conveyor::http::user_agent("awx-launcher"), timeout);
        Self {
            http,
            origin: url.trim_end_matches('/').to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            credentials,
            templates: Mutex::new(HashMap::new()),
        }
    }

    /// The job's page for humans.
    pub fn job_url(&self, job_id: u64) -> String {
        format!("{}/#/jobs/playbook/{job_id}/output", self.origin)
    }

    /// `{origin}{prefix}/{rel}/` — always with the trailing slash, query after it.
    fn url(&self, rel: &str) -> String {
        let (path, query) = match rel.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rel, None),
        };
        let path = path.trim_matches('/');
        match query {
            Some(q) => format!("{}{}/{path}/?{q}", self.origin, self.prefix),
            None => format!("{}{}/{path}/", self.origin, self.prefix),
        }
    }

    async fn call(
        &self,
        method: Method,
        rel: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, bytes::Bytes), AwxError> {
        let what = format!("{method} {}{}", self.prefix, rel_display(rel));
        let mut req = self.http.request(method, self.url(rel));
        req = match &self.credentials {
            Credentials::Token(t) => req.bearer_auth(t.expose()),
            Credentials::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose()))
            }
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| AwxError::Unavailable {
            what: what.clone(),
            message: e.without_url().to_string(),
        })?;
        let status = res.status();
        if status.is_redirection() {
            let location = res
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            return Err(AwxError::Redirected { what, location });
        }
        let bytes = res.bytes().await.map_err(|e| AwxError::Unavailable {
            what: what.clone(),
            message: e.without_url().to_string(),
        })?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        // AWX, or a proxy before it, may quote the request (its credentials) back: scrubbed
        // before anything is cut or kept.
        let detail = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => match m.get("detail").and_then(Value::as_str) {
                Some(d) => d.to_owned(),
                None => Value::Object(m).to_string(),
            },
            Ok(other) => other.to_string(),
            // nginx's HTML error pages: say what they are, not the markup.
            Err(_) => format!("non-JSON body ({} bytes)", bytes.len()),
        };
        let detail = conveyor::redact::excerpt(&detail, 1000);
        if status.is_server_error() {
            return Err(AwxError::Unavailable {
                what,
                message: format!("{status}: {detail}"),
            });
        }
        Err(AwxError::Rejected {
            status: status.as_u16(),
            what,
            detail,
        })
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<T, AwxError> {
        let (_, bytes) = Policy::HTTP
            .run(|| self.call(Method::GET, rel, None))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| AwxError::Unavailable {
            what: format!("GET {}{}", self.prefix, rel_display(rel)),
            message: format!("unexpected body: {e}"),
        })
    }

    /// The template called exactly `name`; zero or several matches are permanent errors that
    /// name it. Cached; `refresh` forgets the cache first (after a 404 on its id).
    pub async fn template(&self, name: &str, refresh: bool) -> Result<Template, AwxError> {
        if !refresh && let Some(t) = self.cache().get(name) {
            return Ok(t.clone());
        }
        #[derive(Deserialize)]
        struct List {
            count: u64,
            results: Vec<Template>,
        }
        let rel = format!("job_templates?name={}", urlencode(name));
        let list: List = self.get(&rel).await?;
        let exact: Vec<Template> = list
            .results
            .into_iter()
            .filter(|t| t.name == name)
            .collect();
        match (list.count, exact.as_slice()) {
            (_, [one]) if list.count == 1 => {
                self.cache().insert(name.to_owned(), one.clone());
                Ok(one.clone())
            }
            (0, _) | (_, []) => Err(AwxError::Rejected {
                status: 404,
                what: format!("GET {}/job_templates/?name=", self.prefix),
                detail: format!("no job template is named {name:?} (or this user cannot see it)"),
            }),
            (n, _) => Err(AwxError::Rejected {
                status: 409,
                what: format!("GET {}/job_templates/?name=", self.prefix),
                detail: format!(
                    "{n} job templates are named {name:?}; names must be unique to launch by name"
                ),
            }),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Template>> {
        conveyor::sync::lock(&self.templates)
    }

    /// What the template accepts on launch.
    pub async fn launch_info(&self, template: u64) -> Result<LaunchInfo, AwxError> {
        self.get(&format!("job_templates/{template}/launch")).await
    }

    /// Launch once. Never retried here: after a 5xx or timeout the job may exist, and only a
    /// lookup ([`AwxClient::find_job`]) can tell.
    pub async fn launch(
        &self,
        template: u64,
        extra_vars: &Map<String, Value>,
    ) -> Result<Launched, AwxError> {
        let body = json!({ "extra_vars": extra_vars });
        let rel = format!("job_templates/{template}/launch");
        let (_, bytes) = self.call(Method::POST, &rel, Some(&body)).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let job_id = v
            .get("job")
            .or_else(|| v.get("id"))
            .and_then(Value::as_u64)
            .ok_or_else(|| AwxError::Unavailable {
                what: format!("POST {}/{rel}/", self.prefix),
                message: "201 without a job id".into(),
            })?;
        let ignored_fields = match v.get("ignored_fields") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        Ok(Launched {
            job_id,
            ignored_fields,
        })
    }

    /// The newest jobs of a template (newest first).
    pub async fn recent_jobs(&self, template: u64, how_many: usize) -> Result<Vec<Job>, AwxError> {
        #[derive(Deserialize)]
        struct List {
            results: Vec<Job>,
        }
        let list: List = self
            .get(&format!(
                "job_templates/{template}/jobs?order_by=-created&page_size={how_many}"
            ))
            .await?;
        Ok(list.results)
    }

    /// The job of `template` whose extra vars carry `var = value` (the deployment id): its
    /// jobs newest first, page by page, back to the first created before `since` (when the
    /// deployment's change came to be: no job of it can be older), [`FIND_PAGES`] pages at most.
    pub async fn find_job(
        &self,
        template: u64,
        var: &str,
        value: &str,
        since: OffsetDateTime,
    ) -> Result<Option<Job>, AwxError> {
        #[derive(Deserialize)]
        struct Page {
            results: Vec<Job>,
            next: Option<String>,
        }
        for page in 1..=FIND_PAGES {
            let list: Page = self
                .get(&format!(
                    "job_templates/{template}/jobs?order_by=-created&page_size=50&page={page}"
                ))
                .await?;
            if let Some(job) = list
                .results
                .iter()
                .find(|j| j.vars().get(var).and_then(Value::as_str) == Some(value))
            {
                return Ok(Some(job.clone()));
            }
            let older = list
                .results
                .last()
                .and_then(|j| j.created)
                .is_some_and(|c| c < since);
            if older || list.next.is_none() || list.results.is_empty() {
                break;
            }
        }
        Ok(None)
    }

    /// One job.
    pub async fn job(&self, id: u64) -> Result<Job, AwxError> {
        self.get(&format!("jobs/{id}")).await
    }

    /// How long the template's jobs typically run: the `elapsed` of its last successful job
    /// (`None` before it has one). A deployment template runs about as long each time.
    pub async fn typical_run(&self, template: u64) -> Result<Option<Duration>, AwxError> {
        let page: Value = self
            .get(&format!(
                "job_templates/{template}/jobs?status=successful&order_by=-finished&page_size=1"
            ))
            .await?;
        Ok(page["results"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|j| j["elapsed"].as_f64())
            .filter(|e| *e > 0.0)
            .map(Duration::from_secs_f64))
    }

    /// What failed in the job, from its first failed job event (`runner_on_failed`,
    /// `runner_on_unreachable`): `task "Wait for stack-1" (role fragalysis-stack, module
    /// kubernetes.core.k8s_info) failed on localhost: <the module's message>`. `None` when no
    /// event says (a job that failed before any task ran).
    pub async fn failed_task(&self, id: u64) -> Result<Option<String>, AwxError> {
        let page: Value = self
            .get(&format!(
                "jobs/{id}/job_events?failed=true&order_by=counter&page_size=50"
            ))
            .await?;
        let events = page["results"].as_array().cloned().unwrap_or_default();
        let Some(e) = events.iter().find(|e| {
            matches!(
                e["event"].as_str(),
                Some("runner_on_failed" | "runner_on_unreachable" | "runner_item_on_failed")
            )
        }) else {
            return Ok(None);
        };
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let mut about = Vec::new();
        if let Some(role) = text(&e["role"]) {
            about.push(format!("role {role}"));
        }
        if let Some(action) = text(&e["event_data"]["task_action"]) {
            about.push(format!("module {action}"));
        }
        let mut said = format!(
            "task \"{}\"",
            text(&e["task"]).unwrap_or_else(|| "?".into())
        );
        if !about.is_empty() {
            said.push_str(&format!(" ({})", about.join(", ")));
        }
        let verb = if e["event"] == "runner_on_unreachable" {
            "could not reach"
        } else {
            "failed on"
        };
        said.push_str(&format!(
            " {verb} {}",
            text(&e["host_name"]).unwrap_or_else(|| "?".into())
        ));
        if let Some(msg) = text(&e["event_data"]["res"]["msg"]) {
            said.push_str(&format!(": {msg}"));
        }
        // The message is the playbook's: scrubbed, and kept to what a status line can show.
        Ok(Some(conveyor::redact::excerpt(&said, 500)))
    }

    /// The last `lines` lines of the job's plain-text stdout, at most `max_bytes`.
    pub async fn stdout_tail(
        &self,
        id: u64,
        lines: usize,
        max_bytes: usize,
    ) -> Result<String, AwxError> {
        let rel = format!("jobs/{id}/stdout?format=txt");
        let (_, bytes) = Policy::HTTP
            .run(|| self.call(Method::GET, &rel, None))
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        // A playbook may print what it was given: scrubbed before it is cut.
        Ok(conveyor::text::keep_end(
            &conveyor::redact::scrub(&tail),
            max_bytes,
        ))
    }

    /// Cancel a job: `Ok(true)` on 202, `Ok(false)` on 405 (it was no longer running).
    pub async fn cancel(&self, id: u64) -> Result<bool, AwxError> {
        match self
            .call(Method::POST, &format!("jobs/{id}/cancel"), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(AwxError::Rejected { status: 405, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn rel_display(rel: &str) -> String {
    let path = rel.split('?').next().unwrap_or(rel).trim_matches('/');
    format!("/{path}/")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_ends_in_a_slash_with_the_query_after_it() {
        let c = AwxClient::new(
            "https://awx.example/",
            "/api/controller/v2",
            Credentials::Token(Secret::new("t")),
            Duration::from_secs(15),
        );
        assert_eq!(
            c.url("jobs/7"),
            "https://awx.example/api/controller/v2/jobs/7/"
        );
        assert_eq!(
            c.url("/jobs/7/"),
            "https://awx.example/api/controller/v2/jobs/7/"
        );
        assert_eq!(
            c.url("job_templates?name=a%20b"),
            "https://awx.example/api/controller/v2/job_templates/?name=a%20b"
        );
    }

    #[test]
    fn names_are_url_encoded_and_tails_bounded() {
        assert_eq!(
            urlencode("Staging Fragalysis Stack (Version Change)"),
            "Staging%20Fragalysis%20Stack%20%28Version%20Change%29"
        );
    }

    /// A proxy before AWX that answers with the request's headers as JSON (no `detail`).
    async fn echoing_proxy(status: u16) -> String {
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| async move {
            let echoed: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("?"))))
                .collect();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(serde_json::json!({ "error": "upstream", "request": echoed })),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn an_answer_echoing_the_basic_credentials_is_scrubbed_from_the_error() {
        use base64::Engine;
        for status in [400, 502] {
            let url = echoing_proxy(status).await;
            let env = std::collections::BTreeMap::from([
                ("AWX_URL", url.as_str()),
                ("AWX_USERNAME", "launcher-user"),
                ("AWX_PASSWORD", "correct-horse-battery"),
            ]);
            let settings = crate::Settings::from_env(&env).unwrap();
            let client = AwxClient::new(
                &settings.url,
                "/api/v2",
                settings.credentials,
                Duration::from_secs(5),
            );
            let err = client
                .call(Method::GET, "jobs/1", None)
                .await
                .unwrap_err()
                .to_string();
            let basic = base64::engine::general_purpose::STANDARD
                .encode("launcher-user:correct-horse-battery");
            assert!(!err.contains(&basic), "{err}");
            assert!(!err.contains("correct-horse-battery"), "{err}");
            assert!(
                err.contains("Basic ***"),
                "the echo is kept, scrubbed: {err}"
            );
        }
    }

    #[test]
    fn credentials_never_print() {
        let c = Credentials::Basic {
            username: "admin".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Token(Secret::new("tok"))).contains("tok"));
    }
}
