//! Conformance: the real awx CLI (awxkit 24.6.1, what today's Fragalysis action runs) drives the
//! AWX simulator, one step per contract of docs/simulators.md (AWX) it depends on: the API
//! root and version root, session login with its CSRF cookie, OPTIONS metadata, templates by
//! name, a launch followed to its end with `--monitor`, jobs, stdout, Django's timestamps.
//!
//! Needs the Python clients' virtualenv (`scripts/ensure-pyclients`, run by `scripts/test`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conveyor_sim::awx::{AwxSim, Pace, PlaybookResult, TemplateSpec};
use serde_json::Value;

const STAGING: &str = "Staging Fragalysis Stack (Version Change)";
const PRODUCTION: &str = "Production Fragalysis Stack (Version Change)";
const TOKEN: &str = "conformance-token-0123456789";

/// The virtualenv `scripts/ensure-pyclients` made.
fn clients() -> PathBuf {
    std::env::var_os("CONVEYOR_PYCLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/conveyor/pyclients")
        })
}

struct Awx {
    host: String,
    home: tempfile::TempDir,
}

struct Ran {
    ok: bool,
    code: Option<i32>,
    out: String,
    err: String,
}

impl Awx {
    /// `awx <auth> <args>`; `contract` names what the step checks.
    async fn run(&self, contract: &str, auth: &[&str], args: &[&str]) -> Ran {
        let awx = clients().join("bin/awx");
        let out = tokio::time::timeout(
            Duration::from_secs(90),
            tokio::process::Command::new(&awx)
                .arg("--conf.host")
                .arg(&self.host)
                .args(auth)
                .args(args)
                // Nothing of the user's own configuration (~/.tower_cli.cfg), no colours.
                .env("HOME", self.home.path())
                .env_remove("TOWER_HOST")
                .env_remove("TOWER_OAUTH_TOKEN")
                .env_remove("TOWER_USERNAME")
                .env_remove("TOWER_PASSWORD")
                .env("TOWER_COLOR", "0")
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{contract}: awx {args:?} did not finish in 90 s"))
        .unwrap_or_else(|e| {
            panic!(
                "{contract}: cannot run {} ({e}); scripts/ensure-pyclients installs it",
                awx.display()
            )
        });
        Ran {
            ok: out.status.success(),
            code: out.status.code(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn expect(
        &self,
        contract: &str,
        auth: &[&str],
        args: &[&str],
        expected: &[&str],
    ) -> String {
        let ran = self.run(contract, auth, args).await;
        assert!(
            ran.ok,
            "{contract}: awx {args:?} failed ({:?})\nstdout: {}\nstderr: {}",
            ran.code, ran.out, ran.err
        );
        for e in expected {
            assert!(
                ran.out.contains(e),
                "{contract}: awx {args:?} did not print {e:?}\nstdout: {}\nstderr: {}",
                ran.out,
                ran.err
            );
        }
        ran.out
    }
}

const SESSION: &[&str] = &["--conf.username", "admin", "--conf.password", "password"];
const BEARER: &[&str] = &["--conf.token", TOKEN];

async fn served() -> (AwxSim, Awx) {
    let sim = AwxSim::new("/api/v2", "admin", "password", TOKEN);
    sim.add_template(TemplateSpec::prompting(STAGING));
    sim.add_template(TemplateSpec::prompting(PRODUCTION));
    // Production's playbook fails, as the role's wait for a pod does when it never turns Ready.
    sim.set_pace(Pace::Auto {
        run_for: Duration::from_millis(300),
        playbook: Some(Arc::new(|job| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if job.template == PRODUCTION {
                    PlaybookResult::failed("stack-1 never became Ready")
                } else {
                    PlaybookResult::successful()
                }
            })
        })),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    let home = tempfile::tempdir().unwrap();
    (sim, Awx { host, home })
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_awx_cli_launches_and_follows_a_job_as_the_fragalysis_action_does() {
    let (sim, awx) = served().await;
    awx.expect(
        "ping needs no login",
        SESSION,
        &["ping", "-f", "json"],
        &["\"version\""],
    )
    .await;
    let listed = awx
        .expect(
            "session login (CSRF cookie, /api/login/), the version root, OPTIONS, paginated lists",
            SESSION,
            &["job_templates", "list", "-f", "json"],
            &[STAGING, PRODUCTION],
        )
        .await;
    assert_eq!(json(&listed)["count"], 2, "{listed}");
    let wrong = awx
        .run(
            "a wrong password is refused",
            &["--conf.username", "admin", "--conf.password", "nope"],
            &["job_templates", "list"],
        )
        .await;
    assert!(
        !wrong.ok,
        "a wrong password is refused: {}{}",
        wrong.out, wrong.err
    );

    let launched = awx
        .expect(
            "launch by name with --extra_vars, followed with --monitor through the job events",
            BEARER,
            &[
                "job_templates",
                "launch",
                STAGING,
                "--extra_vars",
                r#"{"stack_image_tag": "2026.12.1"}"#,
                "--monitor",
                "-f",
                "json",
            ],
            &["changed: [localhost]", "\"successful\""],
        )
        .await;
    assert!(launched.contains("PLAY RECAP"), "{launched}");
    let jobs = sim.jobs();
    assert_eq!(jobs.len(), 1, "one job");
    assert_eq!(
        jobs[0].extra_vars["stack_image_tag"], "2026.12.1",
        "the prompted variables reached the job"
    );
    let id = jobs[0].id.to_string();

    let listed = awx
        .expect(
            "the jobs list",
            SESSION,
            &["jobs", "list", "-f", "json"],
            &[STAGING],
        )
        .await;
    assert_eq!(json(&listed)["count"], 1);
    let job = json(
        &awx.expect(
            "a job by id",
            BEARER,
            &["jobs", "get", &id, "-f", "json"],
            &["successful"],
        )
        .await,
    );
    let created = job["created"].as_str().unwrap();
    let fraction = created
        .trim_end_matches('Z')
        .rsplit_once('.')
        .map(|(_, f)| f.len());
    assert!(
        matches!(fraction, Some(6) | None),
        "Django writes microseconds: {created}"
    );
    assert_eq!(job["event_processing_finished"], true);
    let stdout = awx
        .expect(
            "stdout as text, not HTML",
            BEARER,
            &["jobs", "stdout", &id],
            &["changed: [localhost]"],
        )
        .await;
    assert!(!stdout.contains("<html"), "{stdout}");

    let failed = awx
        .run(
            "a failed job's --monitor exits 1",
            BEARER,
            &[
                "job_templates",
                "launch",
                PRODUCTION,
                "--monitor",
                "-f",
                "json",
            ],
        )
        .await;
    assert_eq!(
        failed.code,
        Some(1),
        "a failed job's --monitor exits 1: {}{}",
        failed.out,
        failed.err
    );
    assert!(failed.out.contains("fatal: [localhost]"), "{}", failed.out);
}

/// What the CLI relies on without showing it: a session's unsafe requests need the CSRF token.
#[tokio::test]
async fn a_sessions_launch_without_its_csrf_token_is_refused() {
    let (sim, awx) = served().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(format!("{}/api/", awx.host)).send().await.unwrap();
    let csrf = root
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("csrftoken="))
        .and_then(|c| c.split(';').next())
        .expect("/api/ sets the CSRF cookie")
        .to_owned();
    let login = http
        .post(format!("{}/api/login/", awx.host))
        .header("cookie", format!("csrftoken={csrf}"))
        .header("x-csrftoken", &csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin&password=password&next=%2Fapi%2F")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 302);
    assert_eq!(
        login.headers()["x-api-session-cookie-name"],
        "awx_sessionid"
    );
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next().map(str::to_owned))
        .collect();
    let jar = cookies.join("; ");
    let rotated = cookies
        .iter()
        .find_map(|c| c.strip_prefix("csrftoken="))
        .expect("the token rotates at login")
        .to_owned();
    let launch = |token: Option<&str>| {
        let mut r = http
            .post(format!("{}/api/v2/job_templates/{}/launch/", awx.host, 961))
            .header("cookie", &jar)
            .json(&serde_json::json!({"extra_vars": {"stack_image_tag": "x"}}));
        if let Some(t) = token {
            r = r.header("x-csrftoken", t);
        }
        r.send()
    };
    let refused = launch(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["detail"],
        "CSRF Failed: CSRF token missing."
    );
    assert_eq!(launch(Some("not-the-token")).await.unwrap().status(), 403);
    assert!(sim.jobs().is_empty(), "nothing launched without the token");
    assert_eq!(launch(Some(&rotated)).await.unwrap().status(), 201);
}
