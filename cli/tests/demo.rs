//! `conveyor demo` as a user runs it (the binary, not a TTY): it must reach the scenario's
//! outcome, exit 0 and print the timeline.

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["demo", "--config", config, "--pod-seconds", "0.5"])
        .args(args)
        .output()
        .expect("the demo runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_happy_demo_deploys_staging_then_production_and_prints_timelines() {
    let (ok, out) = demo(&[]);
    assert!(ok, "{out}");
    for line in [
        "build.requested",
        "deploy.requested.staging",
        "deploy.launched.staging",
        "rollout.progress.staging     stack-2 Ready",
        "deploy.completed.staging",
        "deploy.completed.production",
        "Timeline of the staging deployment",
        "Timeline of the production deployment",
        "| **total** |",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // The notifier told GitHub, and GitHub recorded each deployment's whole life.
    assert!(
        out.contains("staging     xchem/fragalysis-stack@")
            && out.contains("queued → in_progress → success"),
        "{out}"
    );
    assert!(out.contains("conveyor/staging: pending → success"), "{out}");
    assert!(out.contains("production  xchem/fragalysis-stack@"), "{out}");
    // The ledger recorded both deployments while they ran, and says where to look.
    assert!(out.contains("Ledger dashboard: http://127.0.0.1:"), "{out}");
    let record = out
        .split("The ledger's record")
        .nth(1)
        .expect("ledger section");
    assert!(
        record.contains("staging     completed") && record.contains("production  completed"),
        "{record}"
    );
    assert!(
        record.contains("DORA production: 1 deployment(s)"),
        "{record}"
    );
    // Pods are reported highest ordinal first.
    let ready = |pod: &str| out.find(&format!("staging     {pod} Ready")).unwrap();
    assert!(ready("stack-2") < ready("stack-1") && ready("stack-1") < ready("stack-0"));
}

#[test]
fn the_failure_demo_reports_the_crash_loop_as_a_stall_then_a_failure() {
    let (ok, out) = demo(&["--scenario", "failure"]);
    assert!(ok, "{out}");
    assert!(out.contains("STALLED stack-2: CrashLoopBackOff"), "{out}");
    assert!(
        out.contains("FAILED at rollout: stack-2: CrashLoopBackOff"),
        "{out}"
    );
    assert!(!out.contains("deploy.completed.staging"), "{out}");
    assert!(out.contains("queued → in_progress → failure"), "{out}");
}

#[test]
fn the_operator_demo_pauses_holds_resumes_once_and_rolls_back() {
    let (ok, out) = demo(&["--scenario", "operator"]);
    assert!(ok, "{out}");
    let at = |line: &str| {
        out.find(line)
            .unwrap_or_else(|| panic!("missing {line:?} in:\n{out}"))
    };
    // In this order, each once.
    let steps = [
        "paused: production",
        "held: xchem/fragalysis-stack:1.0.4 waits (production is paused)",
        "resumed: production",
        "rolled back: production runs xchem/fragalysis-stack:1.0.3 again (AWX jobs: [\"1.0.3\", \"1.0.4\", \"1.0.3\"])",
    ];
    for pair in steps.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} out of order:\n{out}");
    }
    assert_eq!(out.matches("deploy.held.production").count(), 1, "{out}");
    assert!(out.contains("| held (by the operator) |"), "{out}");
    // GitHub heard who rolled back and why.
    assert!(
        out.contains("(Rolled back by demo-operator: 1.0.4 answers 500 on /api · Deployed xchem/fragalysis-stack:1.0.3)"),
        "{out}"
    );
}

/// The lines `out` must hold in this order; each position.
fn in_order(out: &str, steps: &[&str]) {
    let at = |line: &str| {
        out.find(line)
            .unwrap_or_else(|| panic!("missing {line:?} in:\n{out}"))
    };
    for pair in steps.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} out of order:\n{out}");
    }
}

#[test]
fn the_bad_release_demo_rolls_back_a_failed_verification_and_a_crash_loop_and_unsticks() {
    let (ok, out) = demo(&["--scenario", "bad-release"]);
    assert!(ok, "{out}");
    in_order(
        &out,
        &[
            "verified: production runs 1.0.3",
            "FAILED at verify: GET http://127.0.0.1:",
            "rolled back by Conveyor: production runs 1.0.3 again, verified",
            "FAILED at rollout: stack-2: CrashLoopBackOff",
            "`conveyor unstick production` deletes it",
            "rollout.unstuck.production   deleted stack-2 (CrashLoopBackOff",
            "rolled back again: production runs 1.0.3 (AWX jobs: [\"1.0.3\", \"1.0.4\", \"1.0.3\", \"1.0.5\", \"1.0.3\"]; pods deleted: 1)",
        ],
    );
    // Each rollback says why (printed with its failure, in either order).
    for why in [
        "deploy xchem/fragalysis-stack:1.0.3 to production — Rolled back by conveyor: automatic, after the failure: GET",
        "deploy xchem/fragalysis-stack:1.0.3 to production — Rolled back by conveyor: automatic, after the failure: stack-2: CrashLoopBackOff",
    ] {
        assert_eq!(out.matches(why).count(), 1, "{why}:\n{out}");
    }
    // The crash-looping release's job is canceled, not waited out.
    assert!(out.contains("canceled after"), "{out}");
    assert!(
        out.contains("queued → in_progress → failure  (verify: GET"),
        "a release that fails its verification is a failed deployment on GitHub:\n{out}"
    );
}

#[test]
fn the_approval_demo_waits_for_staging_and_a_release_manager_and_rejects_the_rest() {
    let (ok, out) = demo(&["--scenario", "approval"]);
    assert!(ok, "{out}");
    in_order(
        &out,
        &[
            "deploy.completed.staging",
            "it must soak 2 s there first",
            "AWAITING APPROVAL by release-manager",
            "refused (403 Forbidden): demo-operator may not decide deployments of production (approvers: release-manager)",
            "deploy.approved.production   by demo-release-manager: release notes checked",
            "approved and deployed: production runs 1.0.3",
            "has not completed in staging yet",
            "deploy.rejected.production   by demo-release-manager: not through staging",
            "FAILED at approval: rejected by an approver",
            "rejected: 1.0.4 never reached production",
        ],
    );
    // GitHub showed the wait for the approval.
    assert!(
        out.contains("queued → pending → in_progress → success"),
        "{out}"
    );
}
