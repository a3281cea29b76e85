//! The record on disk: every event once (keyed by its id) and the deployments assembled from
//! them, in SQLite (default) or PostgreSQL through one code path (sqlx's `Any` driver, SQL both
//! understand).

use conveyor::events::{Actor, Trigger};
use conveyor::{Envelope, Event};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::timeline::{Deployment, Millis, Status, environment_of, millis};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored document no longer decodes.
    #[error("stored {what} {id} does not decode: {message}")]
    Corrupt {
        /// `event` or `deployment`.
        what: &'static str,
        /// Its id.
        id: String,
        /// Why.
        message: String,
    },
}

/// The schema, in order; each statement runs once (recorded in `ledger_schema`).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ledger_events (
        id TEXT PRIMARY KEY,
        correlation_id TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        environment TEXT,
        run_id BIGINT,
        sha TEXT,
        at_ms BIGINT NOT NULL,
        body TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ledger_events_chain ON ledger_events (correlation_id)",
    "CREATE INDEX IF NOT EXISTS ledger_events_run ON ledger_events (run_id)",
    "CREATE INDEX IF NOT EXISTS ledger_events_sha ON ledger_events (sha)",
    "CREATE TABLE IF NOT EXISTS ledger_deployments (
        id TEXT PRIMARY KEY,
        correlation_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        requested_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        body TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ledger_deployments_env ON ledger_deployments (environment, requested_ms)",
    // One build deploying a hundred environments is one chain of a thousand events: each event
    // must read its own environment's events, not the whole chain's.
    "CREATE INDEX IF NOT EXISTS ledger_events_chain_env ON ledger_events (correlation_id, environment)",
    "DROP INDEX IF EXISTS ledger_events_chain",
    // Operators' actions (pause, resume, deploy, redeploy, rollback): who, what, when, why,
    // from where — the audit record the dashboard and `conveyor status` show.
    "CREATE TABLE IF NOT EXISTS ledger_actions (
        event_id TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        action TEXT NOT NULL,
        body TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ledger_actions_env ON ledger_actions (environment, at_ms)",
];

/// One operator's action, as the audit record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The event that carried it.
    pub id: String,
    /// The environment acted on.
    pub environment: String,
    /// When.
    pub at: Millis,
    /// `pause`, `resume`, `deploy`, `redeploy` or `rollback`.
    pub action: String,
    /// Who, how authenticated, from where.
    pub actor: Option<Actor>,
    /// Why, in their words.
    pub reason: Option<String>,
    /// The deployment it requested (deploy, redeploy, rollback).
    pub deployment: Option<String>,
    /// The image it deploys.
    pub image: Option<String>,
    /// It overrode a pause or a freeze window.
    #[serde(default)]
    pub forced: bool,
}

impl Action {
    /// The action an event records, if it is an operator's.
    pub fn of(e: &Envelope) -> Option<Self> {
        let base = |environment: &str, action: &str| Action {
            id: e.id.clone(),
            environment: environment.to_owned(),
            at: millis(e.time),
            action: action.to_owned(),
            actor: None,
            reason: None,
            deployment: None,
            image: None,
            forced: false,
        };
        match &e.event {
            Event::EnvironmentPaused(p) => Some(Action {
                actor: Some(p.actor.clone()),
                reason: Some(p.reason.clone()),
                ..base(&p.environment, "pause")
            }),
            Event::EnvironmentResumed(r) => Some(Action {
                actor: Some(r.actor.clone()),
                reason: r.reason.clone(),
                ..base(&r.environment, "resume")
            }),
            Event::DeployApproved(d) | Event::DeployRejected(d) => Some(Action {
                actor: Some(d.actor.clone()),
                reason: d.reason.clone(),
                deployment: Some(Deployment::id_of(&e.correlation_id, &d.environment)),
                forced: d.overrides_requires,
                ..base(
                    &d.environment,
                    if matches!(e.event, Event::DeployApproved(_)) {
                        "approve"
                    } else {
                        "reject"
                    },
                )
            }),
            Event::UnstickRequested(u) => Some(Action {
                actor: Some(u.actor.clone()),
                reason: u.reason.clone(),
                ..base(&u.environment, "unstick")
            }),
            Event::DeployRequested(r) if !r.operation.is_push() => {
                let action = match r.operation.trigger {
                    Trigger::Rollback => "rollback",
                    Trigger::Redeploy => "redeploy",
                    _ => "deploy",
                };
                Some(Action {
                    actor: r.operation.actor.clone(),
                    reason: r.operation.reason.clone(),
                    deployment: Some(Deployment::id_of(&e.correlation_id, &r.environment)),
                    image: Some(r.image.reference()),
                    forced: r.operation.forced,
                    ..base(&r.environment, action)
                })
            }
            _ => None,
        }
    }
}

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

/// Which deployments to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<u32>,
    /// Only those listed after this deployment id (the cursor of the previous page).
    pub before: Option<String>,
}

fn corrupt(what: &'static str, id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        id: id.to_owned(),
        message: e.to_string(),
    }
}

fn deployment(row: &AnyRow) -> Result<Deployment, StoreError> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| corrupt("deployment", &id, e))
}

fn event(row: &AnyRow) -> Result<Envelope, StoreError> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    Envelope::from_json(body.as_bytes()).map_err(|e| corrupt("event", &id, e))
}

/// `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Connect to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and bring the schema up
    /// to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        // SQLite allows one writer: one connection keeps writes from failing with "locked".
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Write-ahead logging: a commit appends to one file and syncs it once,
                        // where the rollback journal created, synced and deleted a file per
                        // transaction (most of the ledger's time in a burst of a thousand
                        // deployments). FULL keeps a recorded event through a power loss.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS ledger_schema (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        let done: i64 = sqlx::query("SELECT COUNT(*) AS n FROM ledger_schema")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        for (i, statement) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            let mut tx = self.pool.begin().await?;
            sqlx::query(statement).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO ledger_schema (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Record `e` unless an event with its id is already recorded; `true` if it was new.
    pub async fn insert_event(&self, e: &Envelope) -> Result<bool, StoreError> {
        let (run_id, sha) = match &e.event {
            Event::BuildStarted(b) | Event::BuildSucceeded(b) | Event::BuildFailed(b) => {
                (Some(b.run_id as i64), Some(b.head_sha.clone()))
            }
            Event::BuildRequested(b) => (b.run_id.map(|r| r as i64), None),
            Event::ScmPush(p) => (None, Some(p.after.clone())),
            _ => (None, None),
        };
        let body = String::from_utf8(e.to_json()).unwrap_or_default();
        let done = sqlx::query(
            "INSERT INTO ledger_events (id, correlation_id, routing_key, environment, run_id, sha, at_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&e.id)
        .bind(&e.correlation_id)
        .bind(e.routing_key())
        .bind(environment_of(&e.event).map(str::to_owned))
        .bind(run_id)
        .bind(sha)
        .bind(millis(e.time))
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn events_where(&self, sql: &str, binds: Vec<Bind>) -> Result<Vec<Envelope>, StoreError> {
        bound(sql, binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event)
            .collect()
    }

    /// The events of chain `correlation` — only those of `environment` and those of no
    /// environment, when given — plus the related ones outside it: the build whose success
    /// requested a deployment, the downstream run, and the pushes of its commits.
    pub async fn related(
        &self,
        correlation: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Envelope>, StoreError> {
        let chain = match environment {
            // One build can deploy many environments: reading only one environment's events
            // keeps an event's cost independent of how many others the chain deploys.
            Some(env) => {
                // Two index seeks: an OR of both would make SQLite read every event of the chain.
                self.events_where(
                    "SELECT id, body FROM ledger_events WHERE correlation_id = $1 AND environment = $2
                     UNION ALL
                     SELECT id, body FROM ledger_events WHERE correlation_id = $1 AND environment IS NULL",
                    vec![
                        Bind::Text(correlation.to_owned()),
                        Bind::Text(env.to_owned()),
                    ],
                )
                .await?
            }
            None => {
                self.events_where(
                    "SELECT id, body FROM ledger_events WHERE correlation_id = $1",
                    vec![Bind::Text(correlation.to_owned())],
                )
                .await?
            }
        };
        let mut ids = Vec::new();
        let mut runs = Vec::new();
        let mut shas = Vec::new();
        for e in &chain {
            match &e.event {
                Event::DeployRequested(r) => {
                    ids.extend(e.causation_id.clone());
                    shas.push(r.sha.clone());
                    shas.extend(r.upstream.iter().map(|u| u.sha.clone()));
                }
                Event::BuildRequested(b) => runs.extend(b.run_id.map(|r| r as i64)),
                Event::BuildSucceeded(b) | Event::BuildStarted(b) => {
                    runs.push(b.run_id as i64);
                    shas.push(b.head_sha.clone());
                }
                _ => {}
            }
        }
        // An image pushed without its commit brings an empty sha, which names nothing.
        shas.retain(|s| !s.is_empty());
        for list in [&mut ids, &mut shas] {
            list.sort();
            list.dedup();
        }
        runs.sort_unstable();
        runs.dedup();
        let mut related = Conditions::default();
        related.one_of("id", ids.into_iter().map(Bind::Text));
        related.one_of("run_id", runs.into_iter().map(Bind::Int));
        related.one_of("sha", shas.into_iter().map(Bind::Text));
        let mut all = chain;
        if let Some(any) = related.joined(" OR ") {
            let sql = format!("SELECT id, body FROM ledger_events WHERE {any}");
            all.extend(self.events_where(&sql, related.binds).await?);
        }
        Ok(all)
    }

    /// Insert or replace a deployment.
    pub async fn put(&self, d: &Deployment) -> Result<(), StoreError> {
        let body = serde_json::to_string(d).map_err(|e| corrupt("deployment", &d.id, e))?;
        sqlx::query(
            "INSERT INTO ledger_deployments (id, correlation_id, environment, status, requested_ms, finished_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, requested_ms = excluded.requested_ms,
               finished_ms = excluded.finished_ms, body = excluded.body",
        )
        .bind(&d.id)
        .bind(&d.correlation_id)
        .bind(&d.environment)
        .bind(d.status.as_str())
        .bind(d.requested_at)
        .bind(d.finished_at)
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One deployment by id, or the only deployment of a chain by its correlation id.
    pub async fn get(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, body FROM ledger_deployments WHERE id = $1 OR correlation_id = $1 ORDER BY requested_ms",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let exact = rows
            .iter()
            .find(|r| r.try_get::<String, _>("id").ok().as_deref() == Some(id));
        match (exact, rows.len()) {
            (Some(r), _) => deployment(r).map(Some),
            (None, 1) => deployment(&rows[0]).map(Some),
            _ => Ok(None),
        }
    }

    /// Deployments, newest first, filtered, one page; the cursor of the next page is the id of
    /// the last one when the page is full.
    pub async fn list(&self, f: &Filter) -> Result<(Vec<Deployment>, Option<String>), StoreError> {
        let limit = f.limit.unwrap_or(50).clamp(1, 500) as i64;
        let mut c = Conditions::default();
        if let Some(env) = &f.environment {
            c.equals("environment", Bind::Text(env.clone()));
        }
        if let Some(status) = &f.status {
            c.equals("status", Bind::Text(status.clone()));
        }
        if let Some(before) = &f.before {
            let row = sqlx::query("SELECT requested_ms FROM ledger_deployments WHERE id = $1")
                .bind(before)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                let ms: i64 = row.try_get("requested_ms")?;
                let a = c.value(Bind::Int(ms));
                let b = c.value(Bind::Text(before.clone()));
                c.clauses.push(format!(
                    "(requested_ms < ${a} OR (requested_ms = ${a} AND id < ${b}))"
                ));
            }
        }
        let sql = format!(
            "SELECT id, body FROM ledger_deployments {} ORDER BY requested_ms DESC, id DESC LIMIT ${}",
            c.where_all(),
            c.value(Bind::Int(limit)),
        );
        let page: Vec<Deployment> = bound(&sql, c.binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(deployment)
            .collect::<Result<_, _>>()?;
        let next = (page.len() as i64 == limit)
            .then(|| page.last().map(|d| d.id.clone()))
            .flatten();
        Ok((page, next))
    }

    /// Every environment that has a deployment.
    pub async fn environments(&self) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT DISTINCT environment FROM ledger_deployments ORDER BY environment")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| r.try_get("environment").map_err(StoreError::from))
            .collect()
    }

    /// Every deployment of `environment` finished (or requested) since `since`.
    pub async fn since(
        &self,
        environment: &str,
        since: Millis,
    ) -> Result<Vec<Deployment>, StoreError> {
        sqlx::query(
            "SELECT id, body FROM ledger_deployments WHERE environment = $1
             AND (finished_ms >= $2 OR requested_ms >= $2) ORDER BY requested_ms",
        )
        .bind(environment)
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(deployment)
        .collect()
    }

    /// The newest completed deployment of `environment`: what runs there now.
    pub async fn current(&self, environment: &str) -> Result<Option<Deployment>, StoreError> {
        let row = sqlx::query(
            "SELECT id, body FROM ledger_deployments WHERE environment = $1 AND status = $2
             ORDER BY finished_ms DESC LIMIT 1",
        )
        .bind(environment)
        .bind(Status::Completed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deployment).transpose()
    }

    /// Record an operator's action (once, keyed by its event).
    pub async fn insert_action(&self, a: &Action) -> Result<(), StoreError> {
        let body = serde_json::to_string(a).map_err(|e| corrupt("action", &a.id, e))?;
        sqlx::query(
            "INSERT INTO ledger_actions (event_id, environment, at_ms, action, body)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.environment)
        .bind(a.at)
        .bind(&a.action)
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Operators' actions, newest first: of `environment` (or every one), at most `limit`,
    /// only of `kinds` when given.
    pub async fn actions(
        &self,
        environment: Option<&str>,
        kinds: &[&str],
        limit: u32,
    ) -> Result<Vec<Action>, StoreError> {
        let mut c = Conditions::default();
        if let Some(env) = environment {
            c.equals("environment", Bind::Text(env.to_owned()));
        }
        c.one_of("action", kinds.iter().map(|k| Bind::Text((*k).to_owned())));
        let sql = format!(
            "SELECT event_id, body FROM ledger_actions {} ORDER BY at_ms DESC, event_id DESC LIMIT ${}",
            c.where_all(),
            c.value(Bind::Int(i64::from(limit.clamp(1, 500)))),
        );
        bound(&sql, c.binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get("event_id")?;
                let body: String = row.try_get("body")?;
                serde_json::from_str(&body).map_err(|e| corrupt("action", &id, e))
            })
            .collect()
    }

    /// Completed deployments of `environment`, the newest (by when they ended) first.
    pub async fn completed(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<Deployment>, StoreError> {
        sqlx::query(
            "SELECT id, body FROM ledger_deployments WHERE environment = $1 AND status = $2
             ORDER BY finished_ms DESC, id DESC LIMIT $3",
        )
        .bind(environment)
        .bind(Status::Completed.as_str())
        .bind(i64::from(limit.clamp(1, 500)))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(deployment)
        .collect()
    }

    /// Delete deployments requested before `before` and their events; how many deployments.
    /// In-flight ones are kept whatever their age.
    pub async fn purge(&self, before: Millis) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let [a, b, c] = Status::IN_FLIGHT.map(Status::as_str);
        sqlx::query(
            "DELETE FROM ledger_events WHERE at_ms < $1 AND correlation_id NOT IN
             (SELECT correlation_id FROM ledger_deployments WHERE status IN ($2, $3, $4))",
        )
        .bind(before)
        .bind(a)
        .bind(b)
        .bind(c)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query(
            "DELETE FROM ledger_deployments WHERE requested_ms < $1 AND status NOT IN ($2, $3, $4)",
        )
        .bind(before)
        .bind(a)
        .bind(b)
        .bind(c)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM ledger_actions WHERE at_ms < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone)
    }
}

/// A value a numbered placeholder (`$n`) stands for.
enum Bind {
    Text(String),
    Int(i64),
}

/// `sql` with `binds` bound to its placeholders in order.
fn bound(
    sql: &str,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    binds.into_iter().fold(sqlx::query(sql), |q, b| match b {
        Bind::Text(t) => q.bind(t),
        Bind::Int(i) => q.bind(i),
    })
}

/// A query's conditions and the values of their placeholders, kept together so that a
/// placeholder's number is always its value's place.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Conditions {
    /// Add a value; returns its placeholder's number.
    fn value(&mut self, v: Bind) -> usize {
        self.binds.push(v);
        self.binds.len()
    }

    /// `column = $n`.
    fn equals(&mut self, column: &str, v: Bind) {
        let n = self.value(v);
        self.clauses.push(format!("{column} = ${n}"));
    }

    /// `column IN ($n, …)`; nothing when there are no values.
    fn one_of(&mut self, column: &str, values: impl IntoIterator<Item = Bind>) {
        let from = self.binds.len() + 1;
        self.binds.extend(values);
        if self.binds.len() >= from {
            let list = placeholders(from, self.binds.len() + 1 - from);
            self.clauses.push(format!("{column} IN ({list})"));
        }
    }

    /// The conditions joined by `op`, if there are any.
    fn joined(&self, op: &str) -> Option<String> {
        (!self.clauses.is_empty()).then(|| self.clauses.join(op))
    }

    /// `WHERE` all of them, or nothing.
    fn where_all(&self) -> String {
        self.joined(" AND ")
            .map(|all| format!("WHERE {all}"))
            .unwrap_or_default()
    }
}
