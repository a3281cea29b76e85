//! The web dashboard: server-rendered HTML with a few lines of vanilla JavaScript for live
//! updates (Server-Sent Events). Overview of environments with DORA, a filtered deployment list,
//! and a deployment page with an SVG Gantt chart of its stages and pods. Everything is served by
//! the binary: no CDN, no build chain.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use crate::Ledger;
use crate::api::{ApiError, EnvironmentView, ListQuery, environments};
use crate::control::{Control, EnvironmentStatus, rollback_target, status_of};
use crate::dora::Dora;
use crate::timeline::{Deployment, Millis, Owner, Status, millis};

const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// HTML-escape `s`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `1.2 s`, `3 min 5 s`, `2 h 4 min`.
pub fn duration(ms: Millis) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// `2026-11-27 12:00:05 UTC`.
pub fn when(ms: Millis) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// The status as a badge: a symbol and a word, so colour is never the only signal.
fn badge(status: Status) -> String {
    let (symbol, word) = match status {
        Status::Requested => ("◷", "requested"),
        Status::Held => ("⏸", "held"),
        Status::Running => ("▶", "running"),
        Status::Completed => ("✔", "completed"),
        Status::Failed => ("✖", "failed"),
        Status::Superseded => ("⤼", "superseded"),
    };
    format!(r#"<span class="badge {word}"><span aria-hidden="true">{symbol}</span> {word}</span>"#)
}

fn page(title: &str, live: &str, body: &str) -> Html<String> {
    page_with(title, live, body, false)
}

/// A page; with `control`, the header asks for an operator token (kept in this tab's session
/// storage and sent as `Authorization: Bearer`, never as a cookie).
fn page_with(title: &str, live: &str, body: &str, control: bool) -> Html<String> {
    let token = if control {
        r#"<form id="token-form" class="token"><label>Operator token <input type="password" id="operator-token" autocomplete="off" spellcheck="false"></label> <button type="submit">Use</button></form>
  <p id="action-status" role="status" aria-live="polite"></p>"#
    } else {
        ""
    };
    Html(format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Conveyor</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
</head>
<body>
<a class="skip" href="#content">Skip to content</a>
<header>
  <nav aria-label="Main">
    <a href="/" class="brand">Conveyor</a>
    <a href="/">Environments</a>
    <a href="/deployments">Deployments</a>
  </nav>
  <p id="live-status" role="status" aria-live="polite"></p>
  {token}
</header>
<main id="content" data-live="{live}">
{body}
</main>
<script src="/static/app.js" defer></script>
</body>
</html>"##,
        title = esc(title),
        live = esc(live),
    ))
}

/// The operator's controls of one environment: pause or resume, redeploy, roll back (each
/// button names what it will do; the script asks for a reason or a confirmation).
fn controls(s: &EnvironmentStatus, rollback_to: Option<&Deployment>) -> String {
    let name = esc(&s.environment);
    let mut out = String::new();
    match (&s.paused, &s.frozen) {
        (Some(p), _) => {
            let _ = write!(
                out,
                r#"<p class="hold paused"><span aria-hidden="true">⏸</span> Paused{}{}{}</p>"#,
                p.by.as_deref()
                    .map(|b| format!(" by {}", esc(b)))
                    .unwrap_or_default(),
                p.since
                    .map(|t| format!(" since {}", when(t)))
                    .unwrap_or_default(),
                p.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default(),
            );
        }
        (None, Some(f)) => {
            let _ = write!(
                out,
                r#"<p class="hold frozen"><span aria-hidden="true">❄</span> {} (until {})</p>"#,
                esc(&f.reason),
                when(f.until)
            );
        }
        (None, None) => {}
    }
    out.push_str(r#"<div class="controls">"#);
    if s.paused.is_some() {
        let _ = write!(
            out,
            r#"<button type="button" class="act" data-action="resume" data-environment="{name}">Resume {name}</button>"#
        );
    } else {
        let _ = write!(
            out,
            r#"<button type="button" class="act" data-action="pause" data-environment="{name}" data-ask="Why pause {name}?">Pause {name}</button>"#
        );
    }
    for d in &s.in_flight {
        if d.held
            .as_deref()
            .is_some_and(|h| h.starts_with("awaiting approval"))
        {
            let image = esc(d.image.as_deref().unwrap_or("?"));
            let _ = write!(
                out,
                r#" <button type="button" class="act" data-action="approve" data-deployment="{id}" data-confirm="Approve {image} for {name}?">Approve {image}</button> <button type="button" class="act" data-action="reject" data-deployment="{id}" data-ask="Why reject {image}?">Reject</button>"#,
                id = esc(&d.id),
            );
        }
    }
    if let Some(current) = &s.current {
        let image = esc(current.image.as_deref().unwrap_or("?"));
        let _ = write!(
            out,
            r#" <button type="button" class="act" data-action="redeploy" data-environment="{name}" data-confirm="Redeploy {image} to {name}, restarting its pods?">Redeploy</button>"#
        );
    }
    if let Some(target) = rollback_to {
        let image = esc(target.image.as_deref().unwrap_or("?"));
        let _ = write!(
            out,
            r#" <button type="button" class="act" data-action="rollback" data-environment="{name}" data-to="{id}" data-confirm="Roll {name} back to {image} (deployment of {at})?">Roll back to {image}</button>"#,
            id = esc(&target.id),
            at = target.finished_at.map(when).unwrap_or_default(),
        );
    }
    out.push_str("</div>");
    if !s.actions.is_empty() {
        out.push_str(r#"<h3>Operator actions</h3><ul class="actions">"#);
        for a in s.actions.iter().take(5) {
            let _ = write!(
                out,
                "<li>{} <strong>{}</strong> by {}{}{}</li>",
                when(a.at),
                esc(&a.action),
                esc(a.actor.as_ref().map_or("?", |x| x.name.as_str())),
                if a.forced { " (forced)" } else { "" },
                a.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default(),
            );
        }
        out.push_str("</ul>");
    }
    out
}

/// A sparkline of durations (oldest first), with the values as its accessible name.
fn sparkline(values: &[Millis]) -> String {
    if values.is_empty() {
        return r#"<span class="muted">no completed deployment yet</span>"#.into();
    }
    let (w, h) = (120.0, 28.0);
    let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 2.0 - (*v as f64 / max) * (h - 4.0)
            )
        })
        .collect();
    let label = values
        .iter()
        .map(|v| duration(*v))
        .collect::<Vec<_>>()
        .join(", ");
    // The last point is drawn as a dot too, so one deployment alone is still visible.
    let last = points.last().cloned().unwrap_or_default();
    let (cx, cy) = last.split_once(',').unwrap_or(("0", "0"));
    format!(
        r#"<svg class="sparkline" viewBox="-3 -3 {vw} {vh}" width="{vw}" height="{vh}" role="img" aria-label="Recent durations: {label}"><polyline fill="none" stroke="currentColor" stroke-width="2" points="{}"/><circle cx="{cx}" cy="{cy}" r="3" fill="currentColor"/></svg> <span class="muted">latest {}</span>"#,
        points.join(" "),
        values.last().map(|v| duration(*v)).unwrap_or_default(),
        vw = w + 6.0,
        vh = h + 6.0,
    )
}

fn dora_panel(all: &[Dora]) -> String {
    let mut out = String::from(
        r#"<section aria-labelledby="dora-h"><h2 id="dora-h">DORA metrics</h2>
<table class="dora"><caption>Last 30 days, per environment (how each is computed: docs/services.md, ledger)</caption>
<thead><tr><th scope="col">Environment</th><th scope="col">Deployment frequency</th><th scope="col">Lead time for changes</th><th scope="col">Change failure rate</th><th scope="col">Time to restore</th></tr></thead><tbody>"#,
    );
    for d in all {
        let secs = |s: Option<f64>| s.map_or("–".into(), |s| duration((s * 1000.0) as Millis));
        let _ = write!(
            out,
            r#"<tr><th scope="row">{}</th><td>{:.2}/day ({} completed)</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&d.environment),
            d.deployment_frequency_per_day,
            d.deployments,
            secs(d.lead_time_seconds),
            d.change_failure_rate
                .map_or("–".into(), |r| format!("{:.0} %", r * 100.0)),
            secs(d.time_to_restore_seconds),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

fn environment_card(v: &EnvironmentView, control: &str) -> String {
    let current = match &v.current {
        Some(d) => format!(
            r#"<p><code>{}</code><br><span class="muted">since {} · <a href="/deployments/{}">deployment</a></span></p>"#,
            esc(d.image.as_deref().unwrap_or("?")),
            d.finished_at.map(when).unwrap_or_default(),
            esc(&d.id)
        ),
        None => r#"<p class="muted">nothing deployed yet</p>"#.into(),
    };
    let last = v
        .last
        .as_ref()
        .map(|d| {
            format!(
                r#"<p>Last: <a href="/deployments/{}">{}</a> {}</p>"#,
                esc(&d.id),
                when(d.requested_at),
                badge(d.status)
            )
        })
        .unwrap_or_default();
    let flight = if v.in_flight.is_empty() {
        String::new()
    } else {
        let links: Vec<String> = v
            .in_flight
            .iter()
            .map(|d| {
                format!(
                    r#"<a href="/deployments/{}">{}</a>"#,
                    esc(&d.id),
                    esc(d.image.as_deref().unwrap_or(&d.id))
                )
            })
            .collect();
        format!(r#"<p class="inflight">In flight: {}</p>"#, links.join(", "))
    };
    format!(
        r#"<article class="env" data-environment="{name}" aria-labelledby="env-{name}">
<h2 id="env-{name}"><a href="/deployments?environment={name}">{name}</a></h2>
<h3>Runs now</h3>{current}{last}{flight}
<h3>Recent durations</h3>{spark}{control}
</article>"#,
        name = esc(&v.name),
        spark = sparkline(&v.recent_durations_ms),
    )
}

type Shared = (Arc<Ledger>, Option<Arc<Control>>);

async fn overview(State((ledger, control)): State<Shared>) -> Result<Response, ApiError> {
    let mut views = environments(&ledger).await?;
    // With the control API, every environment of the pipeline has a card, deployed or not.
    if let Some(c) = &control {
        for e in &c.pipeline.environments {
            if !views.iter().any(|v| v.name == e.name) {
                views.push(EnvironmentView {
                    name: e.name.clone(),
                    current: None,
                    last: None,
                    in_flight: Vec::new(),
                    recent_durations_ms: Vec::new(),
                });
            }
        }
    }
    let mut doras = Vec::new();
    for v in &views {
        doras.push(ledger.dora(&v.name, 30).await?);
    }
    let mut body = String::from(r#"<h1>Environments</h1><div class="envs">"#);
    if views.is_empty() {
        body.push_str(r#"<p class="muted">No deployment recorded yet.</p>"#);
    }
    for v in &views {
        let control_html = match (
            &control,
            control
                .as_ref()
                .and_then(|c| c.pipeline.environment(&v.name)),
        ) {
            (Some(c), Some(e)) => match status_of(&ledger, c, e).await {
                Ok(s) => {
                    let completed = ledger.store().completed(&e.name, 50).await?;
                    controls(&s, rollback_target(&completed))
                }
                Err(e) => format!(
                    r#"<p class="reason">Controls unavailable: {}</p>"#,
                    esc(&format!("{e:?}"))
                ),
            },
            _ => String::new(),
        };
        body.push_str(&environment_card(v, &control_html));
    }
    body.push_str("</div>");
    body.push_str(&dora_panel(&doras));
    Ok(page_with("Environments", "all", &body, control.is_some()).into_response())
}

async fn list(
    State((ledger, _)): State<Shared>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let environment = q.environment.clone().unwrap_or_default();
    let status = q.status.clone().unwrap_or_default();
    let (deployments, next) = ledger.store().list(&q.into()).await?;
    let names = ledger.store().environments().await?;
    let option = |value: &str, current: &str, label: &str| {
        format!(
            r#"<option value="{}"{}>{}</option>"#,
            esc(value),
            if value == current { " selected" } else { "" },
            esc(label)
        )
    };
    let mut body = String::from(
        r#"<h1>Deployments</h1><form class="filters" method="get" action="/deployments"><label>Environment <select name="environment">"#,
    );
    body.push_str(&option("", &environment, "all"));
    for n in &names {
        body.push_str(&option(n, &environment, n));
    }
    body.push_str(r#"</select></label> <label>Status <select name="status">"#);
    body.push_str(&option("", &status, "all"));
    for s in [
        "requested",
        "held",
        "running",
        "completed",
        "failed",
        "superseded",
    ] {
        body.push_str(&option(s, &status, s));
    }
    body.push_str(r#"</select></label> <button type="submit">Filter</button></form>"#);
    body.push_str(r#"<div class="scroll"><table class="deployments"><thead><tr><th scope="col">Requested</th><th scope="col">Environment</th><th scope="col">Image</th><th scope="col">Commit</th><th scope="col">Status</th><th scope="col">Duration</th><th scope="col">Conveyor</th></tr></thead><tbody>"#);
    for d in &deployments {
        let _ = write!(
            body,
            r#"<tr><td><a href="/deployments/{id}">{when}</a></td><td>{env}</td><td><code>{image}</code></td><td>{commit}</td><td>{badge}{reason}</td><td>{dur}</td><td>{over}</td></tr>"#,
            id = esc(&d.id),
            when = when(d.requested_at),
            env = esc(&d.environment),
            image = esc(d.image.as_deref().unwrap_or("?")),
            commit = d
                .sha
                .as_deref()
                .map(|s| format!("<code>{}</code>", short(s)))
                .unwrap_or_default(),
            badge = badge(d.status),
            reason = d
                .reason
                .as_deref()
                .map(|r| format!(r#"<br><span class="reason">{}</span>"#, esc(r)))
                .unwrap_or_default(),
            dur = d.duration_ms().map(duration).unwrap_or_else(|| "–".into()),
            over = duration(d.overhead_ms),
        );
    }
    body.push_str("</tbody></table></div>");
    if deployments.is_empty() {
        body.push_str(r#"<p class="muted">No deployment matches.</p>"#);
    }
    if let Some(n) = next {
        let _ = write!(
            body,
            r#"<p><a rel="next" href="/deployments?environment={}&amp;status={}&amp;before={}">Older deployments →</a></p>"#,
            esc(&environment),
            esc(&status),
            esc(&n)
        );
    }
    Ok(page("Deployments", "all", &body).into_response())
}

/// The Gantt chart of `d`: one row per stage, then one per pod; Conveyor's own time is drawn
/// hatched and labelled, so it stands out without colour.
pub fn gantt(d: &Deployment, now: Millis) -> String {
    let mut rows: Vec<(String, &'static str, Millis, Option<Millis>, String)> = Vec::new();
    for s in &d.stages {
        let (class, who) = match s.owner {
            Owner::Conveyor => ("stage conveyor", "Conveyor"),
            Owner::External => ("stage external", "external"),
            Owner::Operator => ("stage operator", "held by an operator"),
        };
        rows.push((
            s.name.clone(),
            class,
            s.start,
            s.end,
            format!(
                "{}: {} ({who})",
                s.name,
                s.end.map_or("running".into(), |e| duration(e - s.start))
            ),
        ));
    }
    for p in &d.pods {
        let start = p
            .deleted
            .or(p.created)
            .or(p.ready)
            .unwrap_or(d.requested_at);
        rows.push((
            p.pod.clone(),
            "pod",
            start,
            p.ready,
            format!(
                "{}: {}",
                p.pod,
                p.ready.map_or("not Ready".into(), |r| format!(
                    "Ready after {}",
                    duration(r - start)
                ))
            ),
        ));
    }
    if rows.is_empty() {
        return r#"<p class="muted">No stage recorded yet.</p>"#.into();
    }
    let t0 = rows.iter().map(|r| r.2).min().unwrap_or(d.requested_at);
    let open_end = d.finished_at.unwrap_or(now);
    let t1 = rows
        .iter()
        .map(|r| r.3.unwrap_or(open_end))
        .max()
        .unwrap_or(open_end)
        .max(t0 + 1);
    let (label_w, chart_w, row_h) = (190.0, 620.0, 26.0);
    let x = |t: Millis| label_w + (t - t0) as f64 / (t1 - t0) as f64 * chart_w;
    let height = row_h * rows.len() as f64 + 30.0;
    let mut svg = format!(
        r##"<svg class="gantt" viewBox="0 0 {w} {height}" role="img" aria-labelledby="gantt-title gantt-desc" preserveAspectRatio="xMinYMin meet">
<title id="gantt-title">Timeline of {id}</title>
<desc id="gantt-desc">{n} rows: the stages, then each pod from deletion to Ready. Hatched bars are Conveyor's own time.</desc>
<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" class="hatch-bg"/><line x1="0" y1="0" x2="0" y2="6" class="hatch-line" stroke-width="3"/></pattern></defs>"##,
        w = label_w + chart_w + 10.0,
        id = esc(&d.id),
        n = rows.len(),
    );
    for (i, (name, class, start, end, title)) in rows.iter().enumerate() {
        let y = i as f64 * row_h;
        let x0 = x(*start);
        let x1 = x(end.unwrap_or(open_end)).max(x0 + 2.0);
        let open = if end.is_none() { " open" } else { "" };
        let _ = write!(
            svg,
            r#"<g class="row {class}{open}" data-name="{name}"><title>{title}</title><text x="4" y="{ty:.1}">{name}</text><rect x="{x0:.1}" y="{ry:.1}" width="{bw:.1}" height="{bh:.1}" rx="3"/></g>"#,
            name = esc(name),
            title = esc(title),
            ty = y + row_h * 0.68,
            ry = y + 4.0,
            bw = x1 - x0,
            bh = row_h - 8.0,
        );
    }
    let axis_y = row_h * rows.len() as f64 + 16.0;
    for k in 0..=4 {
        let t = t0 + (t1 - t0) * k / 4;
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{axis_y:.1}" text-anchor="middle">{}</text>"#,
            x(t).clamp(label_w + 20.0, label_w + chart_w - 20.0),
            duration(t - t0)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn stage_table(d: &Deployment) -> String {
    let mut t = String::from(
        r#"<table class="stages"><caption>Stages</caption><thead><tr><th scope="col">Stage</th><th scope="col">Whose time</th><th scope="col">Starts</th><th scope="col">Takes</th></tr></thead><tbody>"#,
    );
    for s in &d.stages {
        let _ = write!(
            t,
            r#"<tr class="{}"><th scope="row">{}</th><td>{}</td><td>+{}</td><td>{}</td></tr>"#,
            match s.owner {
                Owner::Conveyor => "conveyor",
                Owner::External => "external",
                Owner::Operator => "operator",
            },
            esc(&s.name),
            match s.owner {
                Owner::Conveyor => "Conveyor",
                Owner::External => "external",
                Owner::Operator => "held (operator)",
            },
            duration(s.start - d.requested_at.min(s.start)),
            s.end.map_or("running".into(), |e| duration(e - s.start)),
        );
    }
    t.push_str("</tbody></table>");
    t
}

async fn detail(
    State((ledger, _)): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(d) = ledger.store().get(&id).await? else {
        let body = format!(
            r#"<h1>Not found</h1><p>No deployment <code>{}</code>.</p>"#,
            esc(&id)
        );
        return Ok((StatusCode::NOT_FOUND, page("Not found", "", &body)).into_response());
    };
    let now = millis(OffsetDateTime::now_utc());
    let mut facts = String::from("<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(facts, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact("Status", badge(d.status));
    if let Some(r) = &d.reason {
        fact(
            "Reason",
            format!(r#"<span class="reason">{}</span>"#, esc(r)),
        );
    }
    if let Some(what) = d.operation.as_ref().and_then(|o| o.describe()) {
        fact("Triggered", esc(&what));
    }
    if let Some(h) = &d.held {
        fact("Held", esc(h));
    }
    fact("Environment", esc(&d.environment));
    fact(
        "Image",
        format!("<code>{}</code>", esc(d.image.as_deref().unwrap_or("?"))),
    );
    if let (Some(repo), Some(sha)) = (&d.repository, &d.sha) {
        fact(
            "Commit",
            format!(
                r#"<a href="https://github.com/{r}/commit/{s}">{r}@{}</a>"#,
                short(sha),
                r = esc(repo),
                s = esc(sha)
            ),
        );
    }
    for c in d.commits.iter().skip(1) {
        fact(
            "Carries",
            format!(
                "{}@{}{}",
                esc(&c.repository),
                short(&c.sha),
                c.committed_at
                    .map(|t| format!(" (committed {})", when(t)))
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(x) = &d.executor {
        let job = match (&x.url, x.job_id) {
            (Some(u), Some(j)) => format!(r#" — <a href="{}">job {j}</a>"#, esc(u)),
            _ => String::new(),
        };
        fact(
            "Executor",
            format!("{} {}{job}", esc(&x.kind), esc(&x.name)),
        );
    }
    if let Some(j) = &d.job {
        fact("AWX job", job_outcome(j, d.status));
    }
    fact("Requested", when(d.requested_at));
    fact(
        "Duration",
        d.duration_ms()
            .map(duration)
            .unwrap_or_else(|| format!("{} so far", duration(now - d.requested_at))),
    );
    fact("Conveyor's own time", duration(d.overhead_ms));
    if d.stalled {
        fact("Stalled", "yes: a rollout stall was reported".into());
    }
    facts.push_str("</dl>");
    let body = format!(
        r#"<h1>{env} deployment</h1>{facts}
<section aria-labelledby="tl-h"><h2 id="tl-h">Timeline</h2>
<p class="legend"><span class="key external"></span> external (build, AWX job, pods) <span class="key conveyor"></span> Conveyor's own time (hatched) <span class="key pod"></span> pod, deleted → Ready</p>
<div class="scroll">{gantt}</div>{table}</section>
<p><a href="/api/deployments/{id}">This deployment as JSON</a></p>"#,
        env = esc(&d.environment),
        gantt = gantt(&d, now),
        table = stage_table(&d),
        id = esc(&d.id),
    );
    Ok(page(&format!("{} {}", d.environment, d.id), &d.id, &body).into_response())
}

/// "failed: task … — after the pods had started to be replaced; the rollout completed".
fn job_outcome(j: &crate::timeline::JobOutcome, status: Status) -> String {
    let mut said = esc(j.status.as_str());
    for detail in [&j.failed_task, &j.explanation].into_iter().flatten() {
        let _ = write!(said, ": {}", esc(detail));
    }
    if j.failed_after_rollout_started {
        let outcome = match status {
            Status::Completed => "the rollout completed: the new version runs",
            Status::Failed => "the rollout failed",
            _ => "the rollout went on",
        };
        let _ = write!(
            said,
            r#" <span class="reason">— after the StatefulSet had started to roll; {outcome}</span>"#
        );
    }
    said
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A small conveyor-belt mark, so browsers asking for an icon get one instead of a 404.
const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect x="1" y="9" width="14" height="4" rx="2" fill="#2f6fb3"/><rect x="3" y="4" width="4" height="4" fill="#b35900"/><rect x="9" y="4" width="4" height="4" fill="#b35900"/></svg>"##;

async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], ICON).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// The dashboard routes; with `control`, the overview carries each environment's controls.
pub fn router(ledger: Arc<Ledger>, control: Option<Arc<Control>>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/deployments", get(list))
        .route("/deployments/{id}", get(detail))
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(script))
        .route("/favicon.ico", get(icon))
        .with_state((ledger, control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(185_000), "3 min 5 s");
        assert_eq!(duration(7_440_000), "2 h 4 min");
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_job_that_failed_mid_rollout_is_said_beside_the_rollouts_outcome() {
        let mut job = crate::timeline::JobOutcome {
            id: 7,
            status: "failed".into(),
            failed: true,
            failed_task: Some("task \"Check <site>\" failed".into()),
            explanation: None,
            failed_after_rollout_started: true,
            at: 0,
        };
        let said = job_outcome(&job, Status::Completed);
        assert!(
            said.starts_with("failed: task &quot;Check &lt;site&gt;&quot; failed"),
            "{said}"
        );
        assert!(
            said.contains("the rollout completed: the new version runs"),
            "{said}"
        );
        assert!(job_outcome(&job, Status::Failed).contains("the rollout failed"));
        job.failed_after_rollout_started = false;
        assert!(!job_outcome(&job, Status::Failed).contains("rollout"));
    }
}
