//! `conveyor deployments` and `conveyor deployment ID`: the ledger's record in the terminal —
//! a table of deployments, and one deployment's timeline as a text Gantt chart.

use anyhow::{Context, bail};
use conveyor_ledger::dashboard::{duration, when};
use conveyor_ledger::timeline::{Deployment, Millis, Owner};
use serde::Deserialize;

/// The ledger's address: `--ledger`, else `CONVEYOR_LEDGER_URL`, else the local default.
pub fn ledger_url(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("CONVEYOR_LEDGER_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8090".into())
        .trim_end_matches('/')
        .to_owned()
}

#[derive(Deserialize)]
struct Page {
    deployments: Vec<Deployment>,
}

async fn get<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<T> {
    let answer = reqwest::get(url)
        .await
        .with_context(|| format!("cannot reach the ledger at {url}"))?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        bail!("the ledger answered {status}: {}", body.trim());
    }
    answer
        .json()
        .await
        .context("the ledger's answer is not what this CLI expects")
}

/// The table of recent deployments, optionally of one environment.
pub async fn list(ledger: &str, environment: Option<&str>, limit: u32) -> anyhow::Result<String> {
    let mut url = format!("{ledger}/api/deployments?limit={limit}");
    if let Some(e) = environment {
        url.push_str(&format!("&environment={e}"));
    }
    let page: Page = get(&url).await?;
    Ok(table(&page.deployments))
}

/// Deployments as an aligned table.
pub fn table(deployments: &[Deployment]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:<11} {:>11} {:>10}  {:<40} {}\n",
        "REQUESTED", "ENVIRONMENT", "STATUS", "DURATION", "CONVEYOR", "IMAGE", "ID"
    );
    for d in deployments {
        out.push_str(&format!(
            "{:<24} {:<12} {:<11} {:>11} {:>10}  {:<40} {}\n",
            when(d.requested_at),
            d.environment,
            d.status.as_str(),
            d.duration_ms().map(duration).unwrap_or_else(|| "–".into()),
            duration(d.overhead_ms),
            d.image.as_deref().unwrap_or("?"),
            d.id
        ));
    }
    if deployments.is_empty() {
        out.push_str("(no deployment recorded)\n");
    }
    out
}

/// One deployment: its facts and its timeline.
pub async fn show(ledger: &str, id: &str) -> anyhow::Result<String> {
    let d: Deployment = get(&format!("{ledger}/api/deployments/{id}")).await?;
    Ok(gantt(&d))
}

/// The timeline as text: one row per stage and per pod, `▓` for Conveyor's own time, `█` for
/// the outside world's, `▒` for a pod from deletion to Ready.
pub fn gantt(d: &Deployment) -> String {
    let mut out = format!(
        "{} — {} {}\n",
        d.id,
        d.environment,
        d.image.as_deref().unwrap_or("?")
    );
    out.push_str(&format!(
        "status {}{}; requested {}; took {}; Conveyor's own time {}\n\n",
        d.status.as_str(),
        d.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        when(d.requested_at),
        d.duration_ms()
            .map(duration)
            .unwrap_or_else(|| "(in flight)".into()),
        duration(d.overhead_ms)
    ));
    let mut rows: Vec<(String, char, Millis, Option<Millis>, &str)> = d
        .stages
        .iter()
        .map(|s| {
            let (c, who) = match s.owner {
                Owner::Conveyor => ('▓', "Conveyor"),
                Owner::External => ('█', ""),
                Owner::Operator => ('░', "held"),
            };
            (s.name.clone(), c, s.start, s.end, who)
        })
        .collect();
    for p in &d.pods {
        let start = p
            .deleted
            .or(p.created)
            .or(p.ready)
            .unwrap_or(d.requested_at);
        rows.push((p.pod.clone(), '▒', start, p.ready, ""));
    }
    if rows.is_empty() {
        out.push_str("(no stage recorded)\n");
        return out;
    }
    let t0 = rows.iter().map(|r| r.2).min().unwrap_or(d.requested_at);
    let t1 = rows
        .iter()
        .filter_map(|r| r.3)
        .chain(d.finished_at)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let width = 48usize;
    let col = |t: Millis| (((t - t0) as f64 / (t1 - t0) as f64) * width as f64).round() as usize;
    for (name, c, start, end, who) in rows {
        let a = col(start).min(width - 1);
        let b = col(end.unwrap_or(t1)).clamp(a + 1, width);
        let bar: String = (0..width)
            .map(|i| if i >= a && i < b { c } else { ' ' })
            .collect();
        let took = end.map_or("…".into(), |e| duration(e - start));
        out.push_str(&format!("{name:<22}|{bar}| {took:>10} {who}\n"));
    }
    out.push_str(&format!(
        "{:<22} 0{:>w$}\n",
        "",
        duration(t1 - t0),
        w = width + 1
    ));
    out
}
