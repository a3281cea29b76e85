//! What the awx CLI reads before it sends anything: the version root (`/api/v2/`), whose keys
//! are the CLI's resources, and each endpoint's OPTIONS — Django REST framework's metadata
//! (`awx/api/metadata.py`): the fields a GET returns and a POST takes, by type, and the
//! methods the view allows in the `Allow` header.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::*;

/// `GET {prefix}/`: the resources of this API version.
pub(super) async fn version_root(State(sim): State<AwxSim>) -> Response {
    let p = sim.lock().prefix.clone();
    let mut root = Map::new();
    for resource in ["ping", "me", "job_templates", "jobs"] {
        root.insert(resource.into(), json!(format!("{p}/{resource}/")));
    }
    axum::Json(Value::Object(root)).into_response()
}

/// One field as DRF's metadata describes it.
fn field(kind: &str, label: &str, help: &str, filterable: bool) -> Value {
    json!({"type": kind, "label": label, "help_text": help, "filterable": filterable})
}

fn fields(list: &[(&str, &str, &str, bool)]) -> Value {
    Value::Object(
        list.iter()
            .map(|(name, kind, label, filterable)| {
                ((*name).to_owned(), field(kind, label, "", *filterable))
            })
            .collect(),
    )
}

const COMMON: &[(&str, &str, &str, bool)] = &[
    ("id", "integer", "ID", true),
    ("type", "choice", "Type", false),
    ("url", "string", "Url", false),
    ("related", "object", "Related", false),
    ("summary_fields", "object", "Summary fields", false),
    ("created", "datetime", "Created", true),
    ("modified", "datetime", "Modified", true),
    ("name", "string", "Name", true),
    ("description", "string", "Description", true),
];

const TEMPLATE: &[(&str, &str, &str, bool)] = &[
    ("job_type", "choice", "Job Type", true),
    ("inventory", "id", "Inventory", true),
    ("project", "id", "Project", true),
    ("playbook", "string", "Playbook", true),
    ("extra_vars", "json", "Extra Variables", true),
    ("limit", "string", "Limit", true),
    ("timeout", "integer", "Timeout", true),
    ("organization", "id", "Organization", true),
    ("status", "choice", "Status", true),
    ("survey_enabled", "boolean", "Survey Enabled", true),
    ("allow_simultaneous", "boolean", "Allow Simultaneous", true),
    (
        "ask_variables_on_launch",
        "boolean",
        "Prompt for Extra Variables",
        true,
    ),
    (
        "ask_limit_on_launch",
        "boolean",
        "Ask Limit On Launch",
        true,
    ),
    (
        "ask_inventory_on_launch",
        "boolean",
        "Ask Inventory On Launch",
        true,
    ),
    ("job_slice_count", "integer", "Job Slice Count", true),
];

const JOB: &[(&str, &str, &str, bool)] = &[
    ("job_template", "id", "Job Template", true),
    ("status", "choice", "Status", true),
    ("failed", "boolean", "Failed", true),
    ("started", "datetime", "Started", true),
    ("finished", "datetime", "Finished", true),
    ("canceled_on", "datetime", "Canceled On", true),
    ("elapsed", "decimal", "Elapsed", true),
    ("job_explanation", "string", "Job Explanation", true),
    ("launch_type", "choice", "Launch Type", true),
    ("extra_vars", "json", "Extra Variables", true),
    (
        "event_processing_finished",
        "boolean",
        "Event Processing Finished",
        false,
    ),
];

/// The fields a launch takes (`JobLaunchSerializer`): what the CLI makes `--flags` of.
const LAUNCH: &[(&str, &str, &str, bool)] = &[
    ("extra_vars", "json", "Extra vars", false),
    ("inventory", "id", "Inventory", false),
    ("scm_branch", "string", "Scm branch", false),
    ("limit", "string", "Limit", false),
    ("job_tags", "string", "Job tags", false),
    ("skip_tags", "string", "Skip tags", false),
    ("job_type", "choice", "Job type", false),
    ("verbosity", "choice", "Verbosity", false),
    ("diff_mode", "boolean", "Diff mode", false),
    ("credentials", "list_of_ids", "Credentials", false),
    ("forks", "integer", "Forks", false),
    ("job_slice_count", "integer", "Job slice count", false),
    ("timeout", "integer", "Timeout", false),
];

/// What an endpoint's OPTIONS says.
#[derive(Clone, Copy)]
pub(super) enum Endpoint {
    Templates,
    Template,
    Launch,
    Jobs,
    Job,
    Events,
    Stdout,
    Cancel,
}

impl Endpoint {
    fn describe(self) -> (&'static str, &'static str, Value) {
        let with = |extra: &[(&str, &str, &str, bool)]| {
            let mut all = COMMON.to_vec();
            all.extend_from_slice(extra);
            fields(&all)
        };
        match self {
            Endpoint::Templates => (
                "Job Template List",
                "GET, HEAD, OPTIONS",
                json!({"GET": with(TEMPLATE)}),
            ),
            Endpoint::Template => (
                "Job Template Detail",
                "GET, HEAD, OPTIONS",
                json!({"GET": with(TEMPLATE)}),
            ),
            Endpoint::Launch => {
                let mut post = fields(LAUNCH);
                post["extra_vars"]["help_text"] =
                    json!("Variables for the job, a JSON or YAML string or object.");
                post["job_type"]["choices"] = json!([["run", "Run"], ["check", "Check"]]);
                post["verbosity"]["choices"] = json!([
                    [0, "0 (Normal)"],
                    [1, "1 (Verbose)"],
                    [2, "2 (More Verbose)"],
                    [3, "3 (Debug)"],
                    [4, "4 (Connection Debug)"],
                    [5, "5 (WinRM Debug)"]
                ]);
                (
                    "Job Template Launch",
                    "GET, POST, HEAD, OPTIONS",
                    json!({"POST": post}),
                )
            }
            Endpoint::Jobs => ("Job List", "GET, HEAD, OPTIONS", json!({"GET": with(JOB)})),
            Endpoint::Job => (
                "Job Detail",
                "GET, HEAD, OPTIONS",
                json!({"GET": with(JOB)}),
            ),
            Endpoint::Events => (
                "Job Job Events List",
                "GET, HEAD, OPTIONS",
                json!({"GET": fields(&[("id", "integer", "ID", true), ("event", "choice", "Event", true),
                    ("counter", "integer", "Counter", true), ("stdout", "string", "Stdout", true),
                    ("start_line", "integer", "Start line", true), ("end_line", "integer", "End line", true),
                    ("failed", "boolean", "Failed", true), ("changed", "boolean", "Changed", true)])}),
            ),
            Endpoint::Stdout => ("Job Stdout", "GET, HEAD, OPTIONS", json!({})),
            Endpoint::Cancel => (
                "Job Cancel",
                "GET, POST, HEAD, OPTIONS",
                json!({"GET": fields(&[("can_cancel", "boolean", "Can cancel", false)])}),
            ),
        }
    }
}

/// `OPTIONS` of `endpoint` (whether or not the object exists, as DRF answers it).
pub(super) fn options(endpoint: Endpoint) -> Response {
    let (name, allow, actions) = endpoint.describe();
    let mut body = json!({"name": name, "description": "",
        "renders": ["application/json", "text/html"],
        "parses": ["application/json"]});
    if actions.as_object().is_some_and(|a| !a.is_empty()) {
        body["actions"] = actions;
    }
    if matches!(
        endpoint,
        Endpoint::Templates | Endpoint::Jobs | Endpoint::Events
    ) {
        body["max_page_size"] = json!(200);
        body["search_fields"] = json!(["name", "description"]);
    }
    if matches!(endpoint, Endpoint::Templates | Endpoint::Template) {
        body["types"] = json!(["job_template"]);
    }
    if matches!(endpoint, Endpoint::Jobs | Endpoint::Job) {
        body["types"] = json!(["job"]);
    }
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
