//! The HTTP side: authentication, the API root, templates, launches, jobs, stdout and events,
//! with AWX's status codes, Django's bodies and nginx's HTML errors.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::*;

// ---- the HTTP side ----

pub(super) fn detail(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "detail": text }))).into_response()
}

pub(super) fn html(status: StatusCode) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html")],
        format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        ),
    )
        .into_response()
}

pub(super) const NO_CREDENTIALS: &str = "Authentication credentials were not provided. To establish a login session, visit /api/login/.";
pub(super) const BAD_PASSWORD: &str =
    "Invalid username/password. To establish a login session, visit /api/login/.";

pub(super) fn unauthorized(text: &str) -> Response {
    let mut r = detail(StatusCode::UNAUTHORIZED, text);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=api authorization_url=/api/o/authorize/"),
    );
    r
}

/// What every authenticated request goes through: faults, authentication, logging.
pub(super) struct Gate {
    pub(super) sim: AwxSim,
    pub(super) method: Method,
    pub(super) uri: String,
}

pub(super) enum Pre {
    Go(Gate, Option<Fault>),
    Answered(Response),
}

impl Gate {
    pub(super) async fn enter(
        sim: &AwxSim,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        auth: bool,
    ) -> Pre {
        let gate = Gate {
            sim: sim.clone(),
            method: method.clone(),
            uri: uri.to_string(),
        };
        let fault = {
            let mut s = sim.lock();
            s.faults.take(method, uri.path())
        };
        match fault {
            Some(Fault::Html502) => {
                return Pre::Answered(gate.finish(html(StatusCode::BAD_GATEWAY)));
            }
            Some(Fault::Html504) => {
                return Pre::Answered(gate.finish(html(StatusCode::GATEWAY_TIMEOUT)));
            }
            Some(Fault::Json500) => {
                return Pre::Answered(gate.finish(detail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "A server error has occurred.",
                )));
            }
            Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
            Some(Fault::Migrating) => {
                let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
                r.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_static("/migrations_notran/"),
                );
                return Pre::Answered(gate.finish(r));
            }
            _ => {}
        }
        if auth {
            let s = sim.lock();
            match session::session(&s, method, headers) {
                session::Session::LoggedIn => {
                    drop(s);
                    return Pre::Go(gate, fault);
                }
                session::Session::None => {}
                session::Session::CsrfFailed(why) => {
                    drop(s);
                    return Pre::Answered(gate.finish(detail(StatusCode::FORBIDDEN, why)));
                }
            }
            let value = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let verdict = if let Some(token) = value.strip_prefix("Bearer ") {
                match s.tokens.iter().find(|(t, _)| t == token) {
                    None => Err(unauthorized(NO_CREDENTIALS)),
                    Some((_, false)) if method != Method::GET && method != Method::HEAD => {
                        Err(detail(
                            StatusCode::FORBIDDEN,
                            "You do not have permission to perform this action.",
                        ))
                    }
                    Some(_) => Ok(()),
                }
            } else if let Some(basic) = value.strip_prefix("Basic ") {
                let expected = base64_encode(&format!("{}:{}", s.username, s.password));
                if basic == expected {
                    Ok(())
                } else {
                    Err(unauthorized(BAD_PASSWORD))
                }
            } else {
                Err(unauthorized(NO_CREDENTIALS))
            };
            drop(s);
            if let Err(r) = verdict {
                return Pre::Answered(gate.finish(r));
            }
        }
        Pre::Go(gate, fault)
    }

    pub(super) fn finish(self, mut r: Response) -> Response {
        let h = r.headers_mut();
        h.insert("x-api-node", HeaderValue::from_static("awx-sim"));
        h.insert("x-api-product-name", HeaderValue::from_static("AWX"));
        h.insert("x-api-product-version", HeaderValue::from_static("24.6.1"));
        self.sim.lock().log.push(LoggedRequest {
            method: self.method.to_string(),
            uri: self.uri,
            status: r.status().as_u16(),
        });
        r
    }
}

/// Standard base64 (for comparing Basic credentials) without another dependency.
pub(super) fn base64_encode(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The injected fault a handler may still have to act on (a launch accepted, then dropped).
#[derive(Clone)]
pub(super) struct PendingFault(Option<Fault>);

pub(super) async fn gate_layer(
    State(sim): State<AwxSim>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let version_root = format!("{}/", sim.lock().prefix);
    let open = matches!(uri.path(), "/api/" | "/api/login/" | "/api/logout/")
        || uri.path() == version_root
        || uri.path().ends_with("/ping/");
    match Gate::enter(&sim, &method, &uri, req.headers(), !open).await {
        Pre::Answered(r) => r,
        Pre::Go(g, fault) => {
            req.extensions_mut().insert(PendingFault(fault));
            g.finish(next.run(req).await)
        }
    }
}

pub(super) async fn fallback(State(sim): State<AwxSim>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if !path.ends_with('/') {
        // Django's APPEND_SLASH: 301 to the slash URL, for every method; a client that
        // follows it turns a POST into a GET.
        let location = match uri.query() {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        let gate = Gate {
            sim,
            method,
            uri: uri.to_string(),
        };
        let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return gate.finish(r);
    }
    detail(
        StatusCode::NOT_FOUND,
        "The requested resource could not be found.",
    )
}

/// `GET /api/`: the versions, and the CSRF cookie a session login needs.
pub(super) async fn api_root(State(sim): State<AwxSim>, headers: HeaderMap) -> Response {
    let p = sim.lock().prefix.clone();
    let root = axum::Json(json!({
        "description": "AWX REST API",
        "current_version": format!("{p}/"),
        "available_versions": {"v2": format!("{p}/")},
        "oauth2": "/api/o/",
        "custom_logo": "",
        "custom_login_info": "",
        "login_redirect_override": "",
    }))
    .into_response();
    session::with_csrf_cookie(&headers, root)
}

pub(super) async fn ping() -> Response {
    axum::Json(json!({"ha": false, "version": "24.6.1", "active_node": "awx-sim", "install_uuid": "00000000-0000-0000-0000-000000000000"}))
        .into_response()
}

pub(super) async fn me(State(sim): State<AwxSim>) -> Response {
    let user = sim.lock().username.clone();
    axum::Json(json!({"count": 1, "next": null, "previous": null, "results": [{"id": 1, "type": "user", "username": user}]})).into_response()
}

pub(super) fn template_json(prefix: &str, t: &Template) -> Value {
    json!({
        "id": t.id,
        "type": "job_template",
        "url": format!("{prefix}/job_templates/{}/", t.id),
        "related": {
            "launch": format!("{prefix}/job_templates/{}/launch/", t.id),
            "jobs": format!("{prefix}/job_templates/{}/jobs/", t.id),
        },
        "name": t.spec.name,
        "organization": t.spec.organization,
        "inventory": 1,
        "project": 2,
        "playbook": "site-fragalysis-stack_version-change.yaml",
        "extra_vars": Value::Object(t.spec.extra_vars.clone()).to_string(),
        "survey_enabled": !t.spec.survey_variables.is_empty(),
        "allow_simultaneous": t.spec.allow_simultaneous,
        "job_slice_count": 1,
        "timeout": 0,
        "ask_variables_on_launch": t.spec.ask_variables_on_launch,
        "ask_limit_on_launch": false,
        "ask_tags_on_launch": false,
        "ask_inventory_on_launch": false,
        "ask_credential_on_launch": false,
    })
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) name: Option<String>,
    pub(super) page: Option<usize>,
    pub(super) page_size: Option<usize>,
    pub(super) order_by: Option<String>,
    /// A field filter, as Django REST framework applies it (`job_events/?failed=true`).
    pub(super) failed: Option<bool>,
    /// Another (`jobs/?status=successful`).
    pub(super) status: Option<String>,
    /// `jobs/?job_template=7`.
    pub(super) job_template: Option<u64>,
    /// `job_events/?start_line__gte=12`: the events from that line on (the CLI's `--monitor`).
    #[serde(rename = "start_line__gte")]
    pub(super) start_line_gte: Option<u64>,
}

/// AWX's list envelope with relative `next`/`previous`.
pub(super) fn paginate(path: &str, q: &ListQuery, all: Vec<Value>) -> Response {
    let size = q.page_size.unwrap_or(25).clamp(1, 200);
    let page = q.page.unwrap_or(1).max(1);
    let pages = all.len().div_ceil(size).max(1);
    if page > pages {
        return detail(StatusCode::NOT_FOUND, "Invalid page.");
    }
    let mut keep = Vec::new();
    if let Some(n) = &q.name {
        keep.push(format!("name={n}"));
    }
    if let Some(o) = &q.order_by {
        keep.push(format!("order_by={o}"));
    }
    if let Some(st) = &q.status {
        keep.push(format!("status={st}"));
    }
    if let Some(l) = q.start_line_gte {
        keep.push(format!("start_line__gte={l}"));
    }
    if q.page_size.is_some() {
        keep.push(format!("page_size={size}"));
    }
    let link = |p: usize| {
        let mut parts = keep.clone();
        parts.push(format!("page={p}"));
        format!("{path}?{}", parts.join("&"))
    };
    let results: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    axum::Json(json!({
        "count": all.len(),
        "next": (page < pages).then(|| link(page + 1)),
        "previous": (page > 1).then(|| link(page - 1)),
        "results": results,
    }))
    .into_response()
}

pub(super) async fn list_templates(
    State(sim): State<AwxSim>,
    Query(q): Query<ListQuery>,
    uri: Uri,
) -> Response {
    let s = sim.lock();
    let all: Vec<Value> = s
        .templates
        .iter()
        .filter(|t| q.name.as_deref().is_none_or(|n| n == t.spec.name))
        .map(|t| template_json(&s.prefix, t))
        .collect();
    paginate(uri.path(), &q, all)
}

pub(super) fn find_template(s: &Inner, id: &str) -> Option<Template> {
    let id: u64 = id.parse().ok()?;
    s.templates.iter().find(|t| t.id == id).cloned()
}

pub(super) async fn get_template(State(sim): State<AwxSim>, Path(id): Path<String>) -> Response {
    let s = sim.lock();
    match find_template(&s, &id) {
        Some(t) => axum::Json(template_json(&s.prefix, &t)).into_response(),
        None => detail(StatusCode::NOT_FOUND, "Not found."),
    }
}

pub(super) async fn launch_info(State(sim): State<AwxSim>, Path(id): Path<String>) -> Response {
    let s = sim.lock();
    match find_template(&s, &id) {
        None => detail(StatusCode::NOT_FOUND, "Not found."),
        Some(t) => axum::Json(json!({
            "can_start_without_user_input": !t.spec.ask_variables_on_launch && t.spec.survey_variables.is_empty(),
            "passwords_needed_to_start": [],
            "ask_variables_on_launch": t.spec.ask_variables_on_launch,
            "ask_limit_on_launch": false,
            "ask_inventory_on_launch": false,
            "survey_enabled": !t.spec.survey_variables.is_empty(),
            "variables_needed_to_start": t.spec.survey_variables,
            "credential_needed_to_start": false,
            "inventory_needed_to_start": false,
            "job_template_data": {"name": t.spec.name, "id": t.id, "description": ""},
            "defaults": {"extra_vars": Value::Object(t.spec.extra_vars.clone()).to_string()},
        }))
        .into_response(),
    }
}

/// How long after a job ends its events are all saved (`event_processing_finished`).
const EVENT_PROCESSING_LAG: time::Duration = time::Duration::milliseconds(500);

pub(super) fn job_json(s: &Inner, j: &Job) -> Value {
    let p = &s.prefix;
    let name = s
        .templates
        .iter()
        .find(|t| t.id == j.template_id)
        .map(|t| t.spec.name.clone())
        .unwrap_or_default();
    let elapsed = match (j.started, j.finished) {
        (Some(a), Some(b)) => (b - a).as_seconds_f64(),
        (Some(a), None) => (OffsetDateTime::now_utc() - a).as_seconds_f64(),
        _ => 0.0,
    };
    // The callback receiver saves a job's events a little after the job ends.
    let events_saved = !j.active()
        && j.finished
            .is_some_and(|f| OffsetDateTime::now_utc() - f >= EVENT_PROCESSING_LAG);
    json!({
        "id": j.id,
        "type": "job",
        "url": format!("{p}/jobs/{}/", j.id),
        "related": {
            "stdout": format!("{p}/jobs/{}/stdout/", j.id),
            "cancel": format!("{p}/jobs/{}/cancel/", j.id),
            "job_events": format!("{p}/jobs/{}/job_events/", j.id),
            "job_template": format!("{p}/job_templates/{}/", j.template_id),
        },
        "summary_fields": {"job_template": {"id": j.template_id, "name": name}},
        "created": ts(j.created),
        "name": name,
        "status": j.status,
        "failed": matches!(j.status.as_str(), "failed" | "error" | "canceled"),
        "started": j.started.map(ts),
        "finished": j.finished.map(ts),
        "canceled_on": (j.status == "canceled").then(|| j.finished.map(ts)).flatten(),
        "elapsed": (elapsed * 1000.0).round() / 1000.0,
        "job_explanation": j.job_explanation,
        "result_traceback": "",
        "event_processing_finished": events_saved,
        "launch_type": "manual",
        "job_template": j.template_id,
        "extra_vars": Value::Object(j.extra_vars.clone()).to_string(),
    })
}

#[derive(Deserialize, Default)]
pub(super) struct LaunchBody {
    #[serde(default)]
    pub(super) extra_vars: Option<Value>,
    #[serde(flatten)]
    pub(super) other: Map<String, Value>,
}

pub(super) async fn launch(
    State(sim): State<AwxSim>,
    axum::Extension(PendingFault(fault)): axum::Extension<PendingFault>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !body.is_empty() && !content_type.starts_with("application/json") {
        return detail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Unsupported media type \"{content_type}\" in request."),
        );
    }
    let parsed: LaunchBody = if body.is_empty() {
        LaunchBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(Value::String(format!("JSON parse error - {e}"))),
                )
                    .into_response();
            }
        }
    };
    let outcome = {
        let mut s = sim.lock();
        create_job(&mut s, &id, parsed)
    };
    let (job_id, answer) = match outcome {
        Err(r) => return *r,
        Ok(x) => x,
    };
    sim.task_manager().await;
    match fault {
        Some(Fault::AcceptThenDrop) => return html(StatusCode::GATEWAY_TIMEOUT),
        Some(Fault::AcceptThenHang(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let mut r = (StatusCode::CREATED, axum::Json(answer)).into_response();
    let location = format!("{}/jobs/{job_id}/", sim.lock().prefix);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub(super) fn create_job(
    s: &mut Inner,
    id: &str,
    body: LaunchBody,
) -> Result<(u64, Value), Box<Response>> {
    let t = find_template(s, id)
        .ok_or_else(|| Box::new(detail(StatusCode::NOT_FOUND, "Not found.")))?;
    let vars: Map<String, Value> = match body.extra_vars {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(text)) if text.trim().is_empty() => Map::new(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(Box::new((
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"extra_vars": [format!("Cannot parse as JSON (error: {text:?} is not an object) or YAML (error: not supported by the simulator).")]})),
                )
                    .into_response()));
            }
        },
        Some(other) => {
            return Err(Box::new((
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"extra_vars": [format!("Cannot parse as JSON (error: {other} is not an object) or YAML.")]})),
            )
                .into_response()));
        }
    };
    let missing: Vec<String> = t
        .spec
        .survey_variables
        .iter()
        .filter(|v| !vars.contains_key(*v))
        .map(|v| format!("'{v}' value missing"))
        .collect();
    if !missing.is_empty() {
        return Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "variables_needed_to_start": missing })),
            )
                .into_response(),
        ));
    }
    // Unprompted fields are dropped into ignored_fields, not rejected.
    let mut accepted = Map::new();
    let mut ignored_vars = Map::new();
    for (k, v) in vars {
        if t.spec.ask_variables_on_launch || t.spec.survey_variables.contains(&k) {
            accepted.insert(k, v);
        } else {
            ignored_vars.insert(k, v);
        }
    }
    let mut ignored = Map::new();
    if !ignored_vars.is_empty() {
        ignored.insert("extra_vars".into(), Value::Object(ignored_vars));
    }
    for (k, v) in body.other {
        ignored.insert(k, v);
    }
    let mut extra_vars = t.spec.extra_vars.clone();
    extra_vars.extend(accepted);
    s.next_id += 1;
    let job_id = s.next_id;
    let job = Job {
        id: job_id,
        template_id: t.id,
        status: "pending".into(),
        created: OffsetDateTime::now_utc(),
        started: None,
        finished: None,
        job_explanation: String::new(),
        extra_vars,
        stdout: Vec::new(),
        failed_task: None,
        pending_since: tokio::time::Instant::now(),
    };
    let mut answer = Map::new();
    answer.insert("job".into(), json!(job_id));
    answer.insert("ignored_fields".into(), Value::Object(ignored));
    if let Value::Object(m) = job_json(s, &job) {
        answer.extend(m);
    }
    s.jobs.push(job);
    Ok((job_id, Value::Object(answer)))
}

pub(super) async fn template_jobs(
    State(sim): State<AwxSim>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
    uri: Uri,
) -> Response {
    let s = sim.lock();
    match find_template(&s, &id) {
        None => detail(StatusCode::NOT_FOUND, "Not found."),
        Some(t) => {
            let mut jobs: Vec<&Job> = s
                .jobs
                .iter()
                .filter(|j| j.template_id == t.id)
                .filter(|j| q.status.as_deref().is_none_or(|st| j.status == st))
                .collect();
            order(&mut jobs, q.order_by.as_deref());
            let all = jobs.into_iter().map(|j| job_json(&s, j)).collect();
            paginate(uri.path(), &q, all)
        }
    }
}

/// `GET {prefix}/jobs/`: every job, filtered by `status` and `job_template`.
pub(super) async fn list_jobs(
    State(sim): State<AwxSim>,
    Query(q): Query<ListQuery>,
    uri: Uri,
) -> Response {
    let s = sim.lock();
    let mut jobs: Vec<&Job> = s
        .jobs
        .iter()
        .filter(|j| q.status.as_deref().is_none_or(|st| j.status == st))
        .filter(|j| q.job_template.is_none_or(|t| j.template_id == t))
        .collect();
    order(&mut jobs, q.order_by.as_deref());
    let all = jobs.into_iter().map(|j| job_json(&s, j)).collect();
    paginate(uri.path(), &q, all)
}

/// `order_by` as the job lists take it.
fn order(jobs: &mut [&Job], by: Option<&str>) {
    match by {
        Some("-created" | "-id") => jobs.reverse(),
        Some("-finished") => jobs.sort_by_key(|j| std::cmp::Reverse(j.finished)),
        Some("finished") => jobs.sort_by_key(|j| j.finished),
        _ => {}
    }
}

pub(super) fn find_job(s: &Inner, id: &str) -> Option<Job> {
    let id: u64 = id.parse().ok()?;
    s.jobs.iter().find(|j| j.id == id).cloned()
}

pub(super) async fn get_job(State(sim): State<AwxSim>, Path(id): Path<String>) -> Response {
    let s = sim.lock();
    match find_job(&s, &id) {
        Some(j) => axum::Json(job_json(&s, &j)).into_response(),
        None => detail(StatusCode::NOT_FOUND, "Not found."),
    }
}

#[derive(Deserialize)]
pub(super) struct StdoutQuery {
    pub(super) format: Option<String>,
}

/// A line as the job's ANSI output colours it (what `txt` strips).
fn ansi(line: &str) -> String {
    let colour = if line.starts_with("fatal") || line.starts_with("failed") {
        "0;31"
    } else if line.starts_with("changed") {
        "0;33"
    } else if line.starts_with("ok") {
        "0;32"
    } else {
        return line.to_owned();
    };
    format!("\u{1b}[{colour}m{line}\u{1b}[0m")
}

/// `GET …/stdout/`: `?format=` (`txt`, `ansi`, `json`, `html`, `txt_download`, `ansi_download`),
/// else by the Accept header (JSON, or the browsable API's HTML).
pub(super) async fn stdout(
    State(sim): State<AwxSim>,
    Path(id): Path<String>,
    Query(q): Query<StdoutQuery>,
    headers: HeaderMap,
) -> Response {
    let job = find_job(&sim.lock(), &id);
    let Some(j) = job else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let format = q
        .format
        .clone()
        .unwrap_or_else(|| if wants_json { "json" } else { "api" }.to_owned());
    let plain = j.stdout.join("\n");
    let coloured = || {
        j.stdout
            .iter()
            .map(|l| ansi(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = |body: String| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body);
    let download = |body: String| {
        let mut r = text(body).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"job_{}.txt\"", j.id))
        {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        r
    };
    let html = |title: &str| {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("<!DOCTYPE html><html><head><title>{title}</title></head><body><pre>{plain}</pre></body></html>"),
        )
            .into_response()
    };
    match format.as_str() {
        "json" => axum::Json(json!({
            "range": {"start": 0, "end": j.stdout.len(), "absolute_end": j.stdout.len()},
            "content": plain,
        }))
        .into_response(),
        "txt" => text(plain).into_response(),
        "ansi" => text(coloured()).into_response(),
        "txt_download" => download(plain),
        "ansi_download" => download(coloured()),
        "html" => html("Job Stdout"),
        "api" => html("Job Stdout | AWX REST API"),
        other => detail(
            StatusCode::NOT_FOUND,
            &format!(
                "Not found: format {other:?} is not one of txt, ansi, json, html, txt_download, ansi_download."
            ),
        ),
    }
}

pub(super) async fn job_events(
    State(sim): State<AwxSim>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
    uri: Uri,
) -> Response {
    let job = find_job(&sim.lock(), &id);
    match job {
        None => detail(StatusCode::NOT_FOUND, "Not found."),
        Some(j) => {
            // One event per line; the failed task's line is its `runner_on_failed` event, with
            // what the serializer says of it.
            let all = j
                .stdout
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    let failed = line.starts_with("fatal");
                    match (&j.failed_task, failed) {
                        (Some(t), true) => json!({
                            "counter": i + 1, "event": "runner_on_failed", "event_display": "Host Failed",
                            "stdout": line, "start_line": i, "end_line": i + 1, "failed": true, "changed": false,
                            "play": t.play, "role": t.role, "task": t.task, "host_name": t.host,
                            "event_data": {"task_action": t.action, "res": {"msg": t.msg, "changed": false}},
                        }),
                        _ => json!({"counter": i + 1, "event": "verbose", "stdout": line, "start_line": i, "end_line": i + 1, "failed": failed, "changed": line.starts_with("changed")}),
                    }
                })
                .filter(|e| q.failed.is_none_or(|f| e["failed"] == f))
                .filter(|e| {
                    q.start_line_gte
                        .is_none_or(|l| e["start_line"].as_u64().is_some_and(|s| s >= l))
                })
                .collect();
            paginate(uri.path(), &q, all)
        }
    }
}

pub(super) async fn can_cancel(State(sim): State<AwxSim>, Path(id): Path<String>) -> Response {
    let job = find_job(&sim.lock(), &id);
    match job {
        None => detail(StatusCode::NOT_FOUND, "Not found."),
        Some(j) => axum::Json(json!({"can_cancel": j.active()})).into_response(),
    }
}

pub(super) async fn cancel(State(sim): State<AwxSim>, Path(id): Path<String>) -> Response {
    let canceled = {
        let mut s = sim.lock();
        let id: Option<u64> = id.parse().ok();
        match s.jobs.iter_mut().find(|j| Some(j.id) == id) {
            None => Err(detail(StatusCode::NOT_FOUND, "Not found.")),
            Some(j) if j.active() => {
                j.status = "canceled".into();
                j.finished = Some(OffsetDateTime::now_utc());
                j.job_explanation = "Job was canceled by user request.".into();
                Ok(j.id)
            }
            Some(_) => Err(detail(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method \"POST\" not allowed.",
            )),
        }
    };
    match canceled {
        Err(r) => r,
        Ok(job_id) => {
            sim.notify(job_id).await;
            sim.task_manager().await;
            StatusCode::ACCEPTED.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn base64_matches_the_rfc_vectors() {
        assert_eq!(base64_encode(""), "");
        assert_eq!(base64_encode("f"), "Zg==");
        assert_eq!(base64_encode("fo"), "Zm8=");
        assert_eq!(base64_encode("foo"), "Zm9v");
        assert_eq!(base64_encode("foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode("admin:password"), "YWRtaW46cGFzc3dvcmQ=");
    }
}
