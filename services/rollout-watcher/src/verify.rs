//! Verification after the rollout: the service must answer its HTTP check as expected several
//! times in a row within a window from the last pod Ready, its Prometheus query must stay
//! under its threshold, and both must hold through the soak. The bookkeeping is pure
//! ([`Verification`]); the probes are plain HTTP requests.

use std::time::Duration;

use conveyor::config::{HttpCheck, PrometheusCheck, Verify};
use time::OffsetDateTime;

/// One look at one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// As expected.
    pub ok: bool,
    /// What was seen, said for people: `GET https://… → 502`, `… = 0.12 > 0.05`.
    pub said: String,
}

/// What the verification says after a round of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Probe again after this long.
    Again(Duration),
    /// Every check passed, through the soak.
    Passed,
    /// It failed: why, with what was seen.
    Failed(String),
}

/// The state of one deployment's verification.
#[derive(Debug, Clone)]
pub struct Verification {
    config: Verify,
    /// The end of the window for the first pass.
    deadline: OffsetDateTime,
    streak: u32,
    /// When the checks first passed (the soak runs from then).
    passed_at: Option<OffsetDateTime>,
    /// The latest answers of the failing probes, newest last (at most 3).
    failures: Vec<String>,
}

fn needed(config: &Verify) -> u32 {
    config.http.as_ref().map_or(1, |h| h.consecutive.max(1))
}

fn interval(config: &Verify) -> Duration {
    Duration::from_secs(config.http.as_ref().map_or(10, |h| h.interval_secs.max(1)))
}

/// The checks, said for people (`deploy.verifying`).
pub fn describe(config: &Verify) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(h) = &config.http {
        out.push(format!(
            "GET {} → {}, {} in a row within {} s",
            h.url, h.expect_status, h.consecutive, h.within_secs
        ));
    }
    if let Some(p) = &config.prometheus {
        out.push(format!("{} ≤ {} ({})", p.query, p.max, p.url));
    }
    out
}

impl Verification {
    /// A verification whose first pass must come within the window that opened at `anchor`
    /// (the last pod Ready) — but at least long enough for the answers it needs from `now`,
    /// so a verification resumed late (another replica took over) still gets its chance.
    pub fn new(config: &Verify, anchor: OffsetDateTime, now: OffsetDateTime) -> Self {
        let within = config.http.as_ref().map_or(300, |h| h.within_secs);
        let least = interval(config) * needed(config) + Duration::from_secs(1);
        let deadline = (anchor + time::Duration::seconds(within as i64))
            .max(now + time::Duration::try_from(least).unwrap_or_default());
        Self {
            config: config.clone(),
            deadline,
            streak: 0,
            passed_at: None,
            failures: Vec::new(),
        }
    }

    /// Take one round of probes (one per configured check) seen at `now`.
    pub fn observe(&mut self, round: &[Probe], now: OffsetDateTime) -> Verdict {
        let failed: Vec<&Probe> = round.iter().filter(|p| !p.ok).collect();
        for p in &failed {
            self.failures.push(p.said.clone());
        }
        let excess = self.failures.len().saturating_sub(3);
        self.failures.drain(..excess);
        if let Some(passed) = self.passed_at {
            if !failed.is_empty() {
                return Verdict::Failed(format!(
                    "failed during the soak, {} s after passing: {}",
                    (now - passed).whole_seconds(),
                    self.seen()
                ));
            }
            let soak = time::Duration::seconds(self.config.soak_secs as i64);
            return if now - passed >= soak {
                Verdict::Passed
            } else {
                Verdict::Again(interval(&self.config))
            };
        }
        if failed.is_empty() {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        if self.streak >= needed(&self.config) {
            self.passed_at = Some(now);
            return if self.config.soak_secs == 0 {
                Verdict::Passed
            } else {
                Verdict::Again(interval(&self.config))
            };
        }
        if now >= self.deadline {
            return Verdict::Failed(if self.failures.is_empty() {
                format!(
                    "{} of {} answers in a row before the window closed",
                    self.streak,
                    needed(&self.config)
                )
            } else {
                self.seen()
            });
        }
        Verdict::Again(interval(&self.config))
    }

    /// The failing answers seen, folded: `GET https://x → 502, 3 times in a row`.
    fn seen(&self) -> String {
        match self.failures.as_slice() {
            [] => "no failing answer".into(),
            [one] => one.clone(),
            all if all.iter().all(|f| *f == all[0]) => {
                format!("{}, {} times in a row", all[0], all.len())
            }
            all => all.join("; "),
        }
    }
}

/// GET the check's URL once.
pub async fn probe_http(client: &reqwest::Client, check: &HttpCheck) -> Probe {
    let said = |what: String| format!("GET {} → {what}", check.url);
    match client.get(&check.url).send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            Probe {
                ok: status == check.expect_status,
                said: said(status.to_string()),
            }
        }
        Err(e) if e.is_timeout() => Probe {
            ok: false,
            said: said("no answer in time".into()),
        },
        Err(_) => Probe {
            ok: false,
            said: said("unreachable".into()),
        },
    }
}

/// Run the check's instant query once: every sample at most `max` (none at all counts as 0).
pub async fn probe_prometheus(client: &reqwest::Client, check: &PrometheusCheck) -> Probe {
    let said = |what: String| format!("{} {what}", check.query);
    let Ok(url) = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", check.url.trim_end_matches('/')),
        &[("query", &check.query)],
    ) else {
        return Probe {
            ok: false,
            said: said(format!("— {} is not a URL", check.url)),
        };
    };
    let answer = match client.get(url).send().await {
        Ok(a) => a,
        Err(_) => {
            return Probe {
                ok: false,
                said: said("— Prometheus unreachable".into()),
            };
        }
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if body["status"] != "success" {
        return Probe {
            ok: false,
            said: said(format!(
                "— Prometheus answered {}",
                body["error"].as_str().unwrap_or("an error")
            )),
        };
    }
    let values: Vec<f64> = match body["data"]["resultType"].as_str() {
        Some("vector") => body["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        Some("scalar") => body["data"]["result"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    let worst = values.iter().copied().fold(0.0_f64, f64::max);
    Probe {
        ok: worst <= check.max,
        said: said(format!("= {worst} (max {})", check.max)),
    }
}

/// One round: every configured check once.
pub async fn round(client: &reqwest::Client, config: &Verify) -> Vec<Probe> {
    let mut out = Vec::new();
    if let Some(h) = &config.http {
        out.push(probe_http(client, h).await);
    }
    if let Some(p) = &config.prometheus {
        out.push(probe_prometheus(client, p).await);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn config(consecutive: u32, soak: u64) -> Verify {
        Verify {
            http: Some(HttpCheck {
                url: "https://app.example/health".into(),
                expect_status: 200,
                consecutive,
                interval_secs: 10,
                within_secs: 60,
            }),
            prometheus: None,
            soak_secs: soak,
        }
    }

    fn answer(ok: bool, status: u16) -> Vec<Probe> {
        vec![Probe {
            ok,
            said: format!("GET https://app.example/health → {status}"),
        }]
    }

    #[test]
    fn it_passes_after_the_answers_in_a_row_and_a_failure_starts_again() {
        let t0 = datetime!(2026-12-02 12:00 UTC);
        let at = |s: i64| t0 + time::Duration::seconds(s);
        let mut v = Verification::new(&config(3, 0), t0, t0);
        assert_eq!(
            v.observe(&answer(true, 200), at(0)),
            Verdict::Again(Duration::from_secs(10))
        );
        assert_eq!(
            v.observe(&answer(true, 200), at(10)),
            Verdict::Again(Duration::from_secs(10))
        );
        // A failure resets the streak.
        v.observe(&answer(false, 502), at(20));
        v.observe(&answer(true, 200), at(30));
        v.observe(&answer(true, 200), at(40));
        assert_eq!(v.observe(&answer(true, 200), at(50)), Verdict::Passed);
    }

    #[test]
    fn it_fails_when_the_window_closes_saying_what_it_saw() {
        let t0 = datetime!(2026-12-02 12:00 UTC);
        let mut v = Verification::new(&config(3, 0), t0, t0);
        for s in [0, 10, 20, 30, 40, 50] {
            v.observe(&answer(false, 502), t0 + time::Duration::seconds(s));
        }
        assert_eq!(
            v.observe(&answer(false, 502), t0 + time::Duration::seconds(60)),
            Verdict::Failed("GET https://app.example/health → 502, 3 times in a row".into())
        );
    }

    #[test]
    fn a_flap_during_the_soak_fails_it_and_a_quiet_soak_passes() {
        let t0 = datetime!(2026-12-02 12:00 UTC);
        let at = |s: i64| t0 + time::Duration::seconds(s);
        let mut v = Verification::new(&config(1, 30), t0, t0);
        assert_eq!(
            v.observe(&answer(true, 200), at(0)),
            Verdict::Again(Duration::from_secs(10))
        );
        v.observe(&answer(true, 200), at(10));
        match v.observe(&answer(false, 503), at(20)) {
            Verdict::Failed(why) => assert_eq!(
                why,
                "failed during the soak, 20 s after passing: GET https://app.example/health → 503"
            ),
            other => panic!("{other:?}"),
        }
        let mut v = Verification::new(&config(1, 30), t0, t0);
        for s in [0, 10, 20] {
            v.observe(&answer(true, 200), at(s));
        }
        assert_eq!(v.observe(&answer(true, 200), at(30)), Verdict::Passed);
    }

    #[test]
    fn a_verification_resumed_late_still_has_time_for_its_answers() {
        let t0 = datetime!(2026-12-02 12:00 UTC);
        // The window (60 s from the last Ready) closed long ago when another replica resumes.
        let now = t0 + time::Duration::minutes(10);
        let mut v = Verification::new(&config(2, 0), t0, now);
        assert!(matches!(
            v.observe(&answer(true, 200), now),
            Verdict::Again(_)
        ));
        assert_eq!(
            v.observe(&answer(true, 200), now + time::Duration::seconds(10)),
            Verdict::Passed
        );
    }
}
