//! The objects GitHub's REST answers are made of, whole, as its OpenAPI description requires
//! them (`simple-user`, `minimal-repository`, `full-repository`, `simple-commit`): a client
//! generated from the description (octokit, PyGithub's attribute table) may read any of their
//! fields, so none is left out.

use serde_json::{Value, json};

/// A user, organisation or bot (`simple-user`).
pub(super) fn user(api: &str, login: &str, id: u64, kind: &str) -> Value {
    let url = format!("{api}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_kgDO{id:08}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": url,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{url}/followers"),
        "following_url": format!("{url}/following{{/other_user}}"),
        "gists_url": format!("{url}/gists{{/gist_id}}"),
        "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{url}/subscriptions"),
        "organizations_url": format!("{url}/orgs"),
        "repos_url": format!("{url}/repos"),
        "events_url": format!("{url}/events{{/privacy}}"),
        "received_events_url": format!("{url}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// The user every simulated write is made by: the token's owner.
pub(super) fn token_owner(api: &str) -> Value {
    user(api, "conveyor-bot", 41_898_282, "Bot")
}

/// The URL templates of a repository, after its API URL.
const REPOSITORY_URLS: &[(&str, &str)] = &[
    ("archive_url", "/{archive_format}{/ref}"),
    ("assignees_url", "/assignees{/user}"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("branches_url", "/branches{/branch}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("comments_url", "/comments{/number}"),
    ("commits_url", "/commits{/sha}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("contents_url", "/contents/{+path}"),
    ("contributors_url", "/contributors"),
    ("deployments_url", "/deployments"),
    ("downloads_url", "/downloads"),
    ("events_url", "/events"),
    ("forks_url", "/forks"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("hooks_url", "/hooks"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("issue_events_url", "/issues/events{/number}"),
    ("issues_url", "/issues{/number}"),
    ("keys_url", "/keys{/key_id}"),
    ("labels_url", "/labels{/name}"),
    ("languages_url", "/languages"),
    ("merges_url", "/merges"),
    ("milestones_url", "/milestones{/number}"),
    (
        "notifications_url",
        "/notifications{?since,all,participating}",
    ),
    ("pulls_url", "/pulls{/number}"),
    ("releases_url", "/releases{/id}"),
    ("stargazers_url", "/stargazers"),
    ("statuses_url", "/statuses/{sha}"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("tags_url", "/tags"),
    ("teams_url", "/teams"),
    ("trees_url", "/git/trees{/sha}"),
];

/// A repository as it appears inside another object (`minimal-repository`).
pub(super) fn minimal_repository(api: &str, full_name: &str, id: u64) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap_or(("", full_name));
    let url = format!("{api}/repos/{full_name}");
    let mut r = json!({
        "id": id,
        "node_id": format!("R_kgDO{id:08}"),
        "name": name,
        "full_name": full_name,
        "owner": user(api, owner, id + 1, "Organization"),
        "private": false,
        "html_url": format!("https://github.com/{full_name}"),
        "description": null,
        "fork": false,
        "url": url,
    });
    for (key, suffix) in REPOSITORY_URLS {
        r[*key] = json!(format!("{url}{suffix}"));
    }
    r
}

/// `GET /repos/{owner}/{repo}` (`full-repository`).
pub(super) fn full_repository(api: &str, full_name: &str, id: u64, default_branch: &str) -> Value {
    let mut r = minimal_repository(api, full_name, id);
    let more = json!({
        "clone_url": format!("https://github.com/{full_name}.git"),
        "git_url": format!("git://github.com/{full_name}.git"),
        "ssh_url": format!("git@github.com:{full_name}.git"),
        "svn_url": format!("https://github.com/{full_name}"),
        "mirror_url": null,
        "homepage": null,
        "language": "Python",
        "default_branch": default_branch,
        "forks": 0, "forks_count": 0,
        "stargazers_count": 0, "watchers": 0, "watchers_count": 0,
        "open_issues": 0, "open_issues_count": 0,
        "size": 1024,
        "has_issues": true, "has_projects": true, "has_wiki": true, "has_pages": false,
        "has_downloads": true, "has_discussions": false,
        "archived": false, "disabled": false,
        "visibility": "public",
        "license": null,
        "topics": [],
        "is_template": false,
        "allow_forking": true,
        "web_commit_signoff_required": false,
        "pushed_at": "2026-01-01T00:00:00Z",
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "network_count": 0,
        "subscribers_count": 0,
        "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
    });
    if let (Some(r), Value::Object(more)) = (r.as_object_mut(), more) {
        r.extend(more);
    }
    r
}

/// A commit as a run names it (`simple-commit`).
pub(super) fn commit(sha: &str, message: &str, at: &str) -> Value {
    let person = json!({"name": "Conveyor Simulator", "email": "sim@conveyor.invalid"});
    json!({
        "id": sha,
        "tree_id": format!("{:0>40}", &sha[sha.len().saturating_sub(20)..]),
        "message": message,
        "timestamp": at,
        "author": person,
        "committer": person,
    })
}
