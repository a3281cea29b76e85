"""Conformance: PyGithub drives the GitHub simulator through every operation Conveyor uses.

Run by sim/tests/github_clients.rs with the virtualenv of scripts/ensure-pyclients:
    python pygithub.py <base url> <token> <owner/repo> <workflow id> <sha>
Each step names the operation it checks; the script prints one line per step and exits 1 if
any failed.
"""

import sys
import traceback

from github import Auth, Github

base, token, repo_name, workflow_id, sha = sys.argv[1:6]
gh = Github(auth=Auth.Token(token), base_url=base, retry=None)
lazy = Github(auth=Auth.Token(token), base_url=base, retry=None, lazy=True)
failed = []
state = {}


def step(operation, check):
    try:
        check()
        print(f"ok     {operation}")
    except Exception as e:  # noqa: BLE001 - every failure is reported, the script goes on
        failed.append(operation)
        print(f"FAILED {operation}: {e!r}")
        traceback.print_exc(limit=2, file=sys.stdout)


def get_repo():
    repo = gh.get_repo(repo_name)
    assert repo.full_name == repo_name, repo.full_name
    assert repo.owner.login == repo_name.split("/")[0], repo.owner.login
    state["repo"] = repo


def get_workflow_by_id():
    wf = state["repo"].get_workflow(int(workflow_id))
    assert wf.name == "build main", wf.name
    state["workflow"] = wf


def get_workflow_by_file():
    wf = state["repo"].get_workflow("build-main.yaml")
    assert wf.id == int(workflow_id), wf.id


def list_workflows():
    names = [w.name for w in state["repo"].get_workflows()]
    assert "build main" in names, names


def dispatch():
    assert state["workflow"].create_dispatch("master", {"be_image_tag": "1.2"}) is True


def dispatch_refused():
    # An input the workflow does not declare: GitHub's 422, which PyGithub reports as False.
    assert state["workflow"].create_dispatch("master", {"nope": "1"}) is False


def list_runs():
    runs = list(state["workflow"].get_runs(event="workflow_dispatch", branch="master"))
    assert runs, "no run for the dispatch"
    assert runs[0].head_branch == "master", runs[0].head_branch
    state["run"] = runs[0]


def list_repo_runs():
    runs = state["repo"].get_workflow_runs(head_sha=state["run"].head_sha)
    assert runs.totalCount >= 1, runs.totalCount


def get_run():
    run = state["repo"].get_workflow_run(state["run"].id)
    assert run.status in ("queued", "in_progress", "completed"), run.status
    assert run.actor.login, run.actor
    assert run.repository.full_name == repo_name, run.repository.full_name


def create_deployment():
    d = state["repo"].create_deployment(
        ref=sha,
        task="deploy",
        auto_merge=False,
        required_contexts=[],
        payload={"conveyor": {"correlation_id": "py-1"}},
        environment="staging",
        description="Conveyor: xchem/fragalysis-stack:1.2",
        production_environment=False,
    )
    assert d.sha == sha, d.sha
    assert d.creator.login, d.creator
    state["deployment"] = d


def list_deployments():
    found = [d for d in state["repo"].get_deployments(sha=sha, environment="staging")]
    assert any(d.payload["conveyor"]["correlation_id"] == "py-1" for d in found), found


def create_deployment_statuses():
    for s in ("queued", "in_progress", "success"):
        st = state["deployment"].create_status(
            s,
            description=f"{s} by Conveyor",
            target_url="https://conveyor.example/deployments/py-1.staging",
            environment_url="https://staging.example",
        )
        assert st.state == s, st.state


def list_deployment_statuses():
    states = [s.state for s in state["deployment"].get_statuses()]
    assert states[0] == "success", states


def create_commit_status():
    commit = lazy.get_repo(repo_name).get_commit(sha)
    st = commit.create_status(
        "success",
        target_url="https://conveyor.example/deployments/py-1.staging",
        description="Deployed",
        context="conveyor/staging",
    )
    assert st.state == "success", st.state


def combined_status():
    combined = lazy.get_repo(repo_name).get_commit(sha).get_combined_status()
    assert combined.state == "success", combined.state
    assert [s.context for s in combined.statuses] == ["conveyor/staging"], combined.statuses


def rate_limit():
    limits = gh.get_rate_limit()
    assert limits.resources.core.limit > 0, limits


def missing_repository():
    from github import UnknownObjectException

    try:
        gh.get_repo(repo_name.split("/")[0] + "/no-such-repository")
    except UnknownObjectException:
        return
    raise AssertionError("a missing repository is a 404")


for operation, check in [
    ("repos/get", get_repo),
    ("actions/get-workflow (by id)", get_workflow_by_id),
    ("actions/get-workflow (by file name)", get_workflow_by_file),
    ("actions/list-repo-workflows", list_workflows),
    ("actions/create-workflow-dispatch", dispatch),
    ("actions/create-workflow-dispatch (undeclared input: 422)", dispatch_refused),
    ("actions/list-workflow-runs", list_runs),
    ("actions/list-workflow-runs-for-repo", list_repo_runs),
    ("actions/get-workflow-run", get_run),
    ("repos/create-deployment", create_deployment),
    ("repos/list-deployments", list_deployments),
    ("repos/create-deployment-status", create_deployment_statuses),
    ("repos/list-deployment-statuses", list_deployment_statuses),
    ("repos/create-commit-status", create_commit_status),
    ("repos/get-combined-status-for-ref", combined_status),
    ("rate-limit/get", rate_limit),
    ("repos/get (404)", missing_repository),
]:
    step(operation, check)

if failed:
    print(f"{len(failed)} steps failed: {', '.join(failed)}")
    sys.exit(1)
print("all steps passed")
