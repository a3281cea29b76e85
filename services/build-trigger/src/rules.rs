//! The pipeline graph as rules: which facts dispatch which downstream builds and request which
//! deployments. Pure functions of the pipeline and one event; no I/O.

use std::collections::BTreeMap;

use conveyor::config::{DeployOn, Environment, Pipeline, Repository, Trigger};
use conveyor::events::{
    BuildRun, DeployRequested, GitRef, ImagePushed, ImageRef, Operation, RefKind,
};

/// Why an event leads nowhere (also the `reason` label of the ignored-events metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The repository is not in the pipeline.
    UnknownRepository,
    /// Not the repository's build workflow.
    OtherWorkflow,
    /// The run built a fork's code.
    Fork,
    /// Triggered by a pull request.
    PullRequest,
    /// A branch or tag the repository does not watch.
    UnwatchedRef,
    /// The ref was deleted.
    RefDeleted,
    /// A kind of event this service has nothing to do for (pushes: builds are what count).
    NotActedOn,
    /// An image no repository builds, or a tag no environment deploys.
    UnknownImage,
}

impl Ignored {
    /// Every reason.
    pub const ALL: [Ignored; 8] = [
        Ignored::UnknownRepository,
        Ignored::OtherWorkflow,
        Ignored::Fork,
        Ignored::PullRequest,
        Ignored::UnwatchedRef,
        Ignored::RefDeleted,
        Ignored::NotActedOn,
        Ignored::UnknownImage,
    ];

    /// The decision counted for it.
    pub fn decision(self) -> &'static str {
        match self {
            Ignored::UnknownRepository => "ignored_unknown_repository",
            Ignored::OtherWorkflow => "ignored_other_workflow",
            Ignored::Fork => "ignored_fork",
            Ignored::PullRequest => "ignored_pull_request",
            Ignored::UnwatchedRef => "ignored_unwatched_ref",
            Ignored::RefDeleted => "ignored_ref_deleted",
            Ignored::NotActedOn => "ignored_not_acted_on",
            Ignored::UnknownImage => "ignored_unknown_image",
        }
    }

    /// Why, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Ignored::UnknownRepository => "a repository not in the pipeline",
            Ignored::OtherWorkflow => "not the repository's build workflow",
            Ignored::Fork => "a fork's run",
            Ignored::PullRequest => "a pull request's run",
            Ignored::UnwatchedRef => "a ref the repository does not watch",
            Ignored::RefDeleted => "a deleted ref",
            Ignored::NotActedOn => "an event with nothing to do, such as a push",
            Ignored::UnknownImage => "an image or tag nothing deploys",
        }
    }
}

/// The values an upstream success offers to `{upstream.*}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `owner/name`.
    pub repository: String,
    /// The ref built.
    pub git_ref: GitRef,
    /// The commit built.
    pub sha: String,
    /// The image tag the build pushed.
    pub tag: String,
    /// The run id.
    pub run_id: u64,
}

impl Upstream {
    fn value(&self, placeholder: &str) -> String {
        match placeholder {
            "upstream.tag" => self.tag.clone(),
            "upstream.sha" => self.sha.clone(),
            "upstream.short_sha" => self.sha.chars().take(7).collect(),
            "upstream.branch" => match self.git_ref.kind {
                RefKind::Branch => self.git_ref.name.clone(),
                RefKind::Tag => String::new(),
            },
            "upstream.ref" => self.git_ref.full(),
            "upstream.repository" => self.repository.clone(),
            "upstream.run_id" => self.run_id.to_string(),
            // The config check rejects unknown placeholders before anything runs.
            _ => String::new(),
        }
    }

    /// Fill every `{upstream.*}` placeholder of `template`.
    pub fn render(&self, template: &str) -> String {
        let mut out = template.to_owned();
        for p in conveyor::config::placeholders(template) {
            out = out.replace(&format!("{{{p}}}"), &self.value(p));
        }
        out
    }
}

/// A downstream build to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The downstream repository.
    pub repository: String,
    /// Its build workflow (name or file).
    pub workflow: String,
    /// The ref to dispatch on.
    pub git_ref: String,
    /// Rendered inputs.
    pub inputs: BTreeMap<String, String>,
}

/// What one successful build leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The upstream facts.
    pub upstream: Upstream,
    /// Downstream builds to dispatch.
    pub dispatches: Vec<Dispatch>,
    /// Deployments to request.
    pub deploys: Vec<DeployRequested>,
}

/// Whether `run` is a build of `repo`'s build workflow.
pub fn is_build_workflow(repo: &Repository, run: &BuildRun) -> bool {
    let wanted = repo.build_workflow.as_str();
    run.workflow_name == wanted
        || run
            .workflow_path
            .as_deref()
            .is_some_and(|p| p == wanted || p.rsplit('/').next() == Some(wanted))
}

/// Check the run is one the pipeline acts on, and return its repository and ref.
pub fn classify_run<'p>(
    pipeline: &'p Pipeline,
    run: &BuildRun,
) -> Result<(&'p Repository, GitRef), Ignored> {
    let repo = pipeline
        .repository(&run.repository)
        .ok_or(Ignored::UnknownRepository)?;
    if !is_build_workflow(repo, run) {
        return Err(Ignored::OtherWorkflow);
    }
    if run.head_repository.is_some() {
        return Err(Ignored::Fork);
    }
    if matches!(
        run.trigger.as_deref(),
        Some("pull_request" | "pull_request_target" | "pull_request_review")
    ) {
        return Err(Ignored::PullRequest);
    }
    let head = run.head_branch.as_deref().ok_or(Ignored::UnwatchedRef)?;
    let git_ref = infer_ref(pipeline, repo, head);
    if !repo.watches(&git_ref) && !deploys_ref(pipeline, repo, &git_ref) {
        return Err(Ignored::UnwatchedRef);
    }
    Ok((repo, git_ref))
}

/// A workflow run names its ref only by short name (`head_branch` is `1.2.3` for a run of tag
/// `1.2.3`): a name the repository or an environment lists as a branch is a branch; otherwise a
/// name matching a tag rule is a tag; anything else is taken as a branch.
pub fn infer_ref(pipeline: &Pipeline, repo: &Repository, head: &str) -> GitRef {
    let branch = GitRef::branch(head);
    let listed_branch = repo.branches.iter().any(|b| b == head)
        || repo.dispatch_ref.as_deref() == Some(head)
        || environments_of(pipeline, repo)
            .any(|e| matches!(&e.on, Trigger::Branch(b) if b == head));
    if listed_branch {
        return branch;
    }
    let tag = GitRef::tag(head);
    if repo.watches(&tag) || environments_of(pipeline, repo).any(|e| e.accepts(&tag)) {
        tag
    } else {
        branch
    }
}

fn environments_of<'p>(
    pipeline: &'p Pipeline,
    repo: &'p Repository,
) -> impl Iterator<Item = &'p Environment> {
    pipeline
        .environments
        .iter()
        .filter(move |e| e.repository.eq_ignore_ascii_case(&repo.name))
}

fn deploys_ref(pipeline: &Pipeline, repo: &Repository, git_ref: &GitRef) -> bool {
    environments_of(pipeline, repo).any(|e| e.accepts(git_ref))
}

/// The tag the build of `git_ref` pushed.
pub fn image_tag(repo: &Repository, git_ref: &GitRef) -> String {
    match git_ref.kind {
        RefKind::Tag => git_ref.name.clone(),
        RefKind::Branch => repo.branch_image_tag.clone(),
    }
}

/// What a successful build of `repo` at `git_ref` leads to.
pub fn plan_success(
    pipeline: &Pipeline,
    repo: &Repository,
    git_ref: GitRef,
    run: &BuildRun,
) -> Plan {
    let upstream = Upstream {
        repository: repo.name.clone(),
        tag: image_tag(repo, &git_ref),
        git_ref: git_ref.clone(),
        sha: run.head_sha.clone(),
        run_id: run.run_id,
    };
    let dispatches = if repo.watches(&git_ref) {
        repo.downstream
            .iter()
            .filter_map(|d| pipeline.repository(d))
            .map(|d| {
                let mut inputs = BTreeMap::new();
                for (k, v) in d.dispatch_inputs.iter().chain(&repo.downstream_inputs) {
                    inputs.insert(k.clone(), upstream.render(v));
                }
                Dispatch {
                    repository: d.name.clone(),
                    workflow: d.build_workflow.clone(),
                    git_ref: d.dispatch_ref.clone().unwrap_or_else(|| {
                        d.branches.first().cloned().unwrap_or_else(|| "main".into())
                    }),
                    inputs,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let deploys = environments_of(pipeline, repo)
        .filter(|e| e.deploy_on == DeployOn::Build && e.accepts(&git_ref))
        .map(|e| DeployRequested {
            environment: e.name.clone(),
            repository: repo.name.clone(),
            sha: run.head_sha.clone(),
            git_ref: git_ref.clone(),
            image: ImageRef {
                repository: repo.image().to_owned(),
                tag: Some(upstream.tag.clone()),
                digest: None,
            },
            upstream: Vec::new(),
            // The run's creation, not its end: a slow build of an older push that finishes
            // after a newer one's is still the older change.
            origin_time: run.created_at,
            operation: Default::default(),
        })
        .collect();
    Plan {
        upstream,
        dispatches,
        deploys,
    }
}

/// The deployments an image push requests, for environments that deploy on image pushes.
pub fn plan_image(
    pipeline: &Pipeline,
    pushed: &ImagePushed,
) -> Result<Vec<DeployRequested>, Ignored> {
    let tag = pushed.image.tag.as_deref().ok_or(Ignored::UnknownImage)?;
    let repo = pipeline
        .repositories
        .iter()
        .find(|r| r.image().eq_ignore_ascii_case(&pushed.image.repository))
        .ok_or(Ignored::UnknownImage)?;
    let deploys: Vec<DeployRequested> = environments_of(pipeline, repo)
        .filter(|e| e.deploy_on == DeployOn::Image)
        .filter_map(|e| {
            let git_ref = match &e.on {
                Trigger::Branch(b) if tag == repo.branch_image_tag => GitRef::branch(b.clone()),
                Trigger::Tag(_) if e.accepts(&GitRef::tag(tag)) => GitRef::tag(tag),
                _ => return None,
            };
            // Empty when the registry does not say which commit the image holds. A tag
            // still names one (the notifier reports on the tag and learns the commit from
            // GitHub); a branch has moved on since, so nothing per commit can be reported.
            let sha = pushed.revision.clone().unwrap_or_default();
            let untracked = sha.is_empty() && git_ref.kind == RefKind::Branch;
            Some(DeployRequested {
                environment: e.name.clone(),
                repository: repo.name.clone(),
                sha,
                git_ref,
                image: pushed.image.clone(),
                upstream: Vec::new(),
                origin_time: None,
                operation: Operation {
                    untracked,
                    ..Default::default()
                },
            })
        })
        .collect();
    if deploys.is_empty() {
        Err(Ignored::UnknownImage)
    } else {
        Ok(deploys)
    }
}

#[cfg(test)]
mod tests;
