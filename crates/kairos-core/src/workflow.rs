//! Workflows: a job whose work is a DAG of steps instead of one task.
//!
//! A workflow is a list of [`StepSpec`]s. Each step has a task, names the steps it waits for
//! (`depends_on`, its *upstream* steps) and carries a [`TriggerRule`] that decides, from how
//! those steps ended, whether it runs. [`validate_steps`] checks the list (names, references,
//! cycles, each step's task and overrides) and builds a [`Dag`]. Everything else here is a pure
//! function of the DAG and the steps' statuses: the runtime stores one [`StepStatus`] per step,
//! asks [`advance`] what changes and applies it, so the rules live in one place and tests can
//! check them exhaustively.
//!
//! # States
//!
//! ```text
//! waiting ─► active ─► succeeded | failed          the rule said run (released)
//! waiting ─► upstream_failed | skipped              the rule decided without running it
//! failed | upstream_failed | skipped ─► waiting     rerun failed
//! ```
//!
//! `active` covers a step run that is queued or running (its retries included); `failed` covers
//! failed, timed out, lost and cancelled. The last four states are terminal.
//!
//! # Trigger rules (Airflow's)
//!
//! A rule looks at the statuses of the step's upstream steps, counting each as *succeeded*,
//! *failed* (`failed` or `upstream_failed`), *skipped* or not yet *done* (not terminal), and
//! gives a [`Verdict`] ([`verdict`]): wait, run, or end the step as `upstream_failed` or
//! `skipped` without running it. A rule decides as soon as the outcome is certain: with
//! `all_success` one failed upstream step is enough to mark the step `upstream_failed` while the
//! others still run. A step without upstream steps (a root) runs at once, whatever its rule.
//!
//! # Advancing and the outcome
//!
//! [`advance`] applies the rules to every waiting step, in topological order, until nothing
//! changes: a step that ends `upstream_failed` or `skipped` can decide its downstream steps in
//! the same call, a step that is released (`active`) decides nothing until it ends. The
//! runtime calls it when a run starts (it releases the roots) and whenever a step ends.
//!
//! Invariant: once every upstream step of a waiting step has ended, every rule gives a verdict
//! other than wait. So after [`advance`], a run without an active step has every step ended, and
//! [`outcome`] is then `succeeded` if every step succeeded or was skipped, else `failed`.
//! [`rerun_failed`] picks the steps to set back to waiting for another try.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;
use crate::error::{ValidationErrors, index, path};
use crate::job::{validate_hook, validate_name, validate_retry, validate_task};
use crate::policy::RetryPolicy;
use crate::spec::{HooksSpec, RetrySpec, TaskSpec};

/// Most steps in a workflow, and most entries in one step's `depends_on`.
pub const MAX_STEPS: usize = 500;
/// Most variables in a step's `env`.
pub const MAX_STEP_ENV: usize = 64;
/// Longest variable name in a step's `env`, in bytes.
pub const MAX_ENV_NAME_LEN: usize = 256;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One step of a workflow: a task, the steps it waits for and the rule that decides whether it
/// runs. Fields other than `task` override the job's for this step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
    pub name: String,
    /// What runs.
    pub task: TaskSpec,
    /// Names of the steps this one waits for (its upstream steps). Default: none, the step
    /// starts with the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When the step runs, given how its upstream steps ended. Default `all_success`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub trigger_rule: TriggerRule,
    /// Limit for one attempt of this step, e.g. `10m`. Default: the job's `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy of this step. Default: the job's `retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Exit codes that count as success for a `command` or `shell` task. Default: the job's
    /// `expected_exit_codes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_exit_codes: Option<Vec<i32>>,
    /// Commands run before and after each attempt of this step. Default: the job's `hooks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksSpec>,
    /// Variables added to the task's environment (over the task's own `env`); only for
    /// `command` and `shell` tasks. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// When a step runs, given how its upstream steps ended (see [`verdict`]). "Failed" counts
/// `failed` and `upstream_failed` steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream step succeeded. One failed makes the step `upstream_failed`, one skipped
    /// makes it `skipped`, at once.
    #[default]
    AllSuccess,
    /// Every upstream step ended, however.
    AllDone,
    /// Every upstream step failed (a cleanup step). One that succeeded or was skipped skips
    /// the step at once.
    AllFailed,
    /// At least one upstream step succeeded; runs as soon as one does. When all ended without
    /// a success: `upstream_failed` if one failed, else `skipped`.
    OneSuccess,
    /// At least one upstream step failed; runs as soon as one does (an alert step). When all
    /// ended without a failure: `skipped`.
    OneFailed,
    /// No upstream step failed: each succeeded or was skipped. One failed makes the step
    /// `upstream_failed` at once.
    NoneFailed,
    /// Runs when the workflow starts, whatever its upstream steps do: `depends_on` then only
    /// orders the steps for display.
    Always,
}

impl TriggerRule {
    pub const ALL: [TriggerRule; 7] = [
        TriggerRule::AllSuccess,
        TriggerRule::AllDone,
        TriggerRule::AllFailed,
        TriggerRule::OneSuccess,
        TriggerRule::OneFailed,
        TriggerRule::NoneFailed,
        TriggerRule::Always,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AllFailed => "all_failed",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::NoneFailed => "none_failed",
            TriggerRule::Always => "always",
        }
    }
}

/// Where one step of a workflow run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Its rule has not decided yet.
    Waiting,
    /// Released: queued or running (retries included).
    Active,
    Succeeded,
    /// Failed, timed out, lost or cancelled.
    Failed,
    /// Not run: its rule can no longer hold because upstream steps failed.
    UpstreamFailed,
    /// Not run: its rule does not apply (e.g. `all_failed` after a success).
    Skipped,
}

impl StepStatus {
    /// Succeeded, failed, upstream failed or skipped.
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepStatus::Waiting | StepStatus::Active)
    }

    fn is_failure(self) -> bool {
        matches!(self, StepStatus::Failed | StepStatus::UpstreamFailed)
    }
}

/// What a trigger rule says about a waiting step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: upstream steps still have to end.
    Wait,
    /// Release the step.
    Run,
    /// End the step as `upstream_failed` without running it.
    UpstreamFailed,
    /// End the step as `skipped` without running it.
    Skip,
}

/// How a workflow run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowOutcome {
    Succeeded,
    Failed,
}

/// The per-step overrides of the job's plan; `None` inherits the job's value.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    pub timeout: Option<SignedDuration>,
    pub retry: Option<RetryPolicy>,
    pub expected_exit_codes: Option<Vec<i32>>,
}

/// A validated workflow: its steps in the order given, their dependency edges both ways, rules
/// and plans. Steps are known by their index in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dag {
    names: Vec<String>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    rules: Vec<TriggerRule>,
    plans: Vec<StepPlan>,
    /// Kahn's order, the lowest ready index first: steps given in a topological order keep it.
    order: Vec<usize>,
}

impl Dag {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The steps `i` waits for, in the order of its `depends_on`.
    pub fn upstream(&self, i: usize) -> &[usize] {
        &self.upstream[i]
    }

    /// The steps that wait for `i`, in step order.
    pub fn downstream(&self, i: usize) -> &[usize] {
        &self.downstream[i]
    }

    pub fn rule(&self, i: usize) -> TriggerRule {
        self.rules[i]
    }

    pub fn plan(&self, i: usize) -> &StepPlan {
        &self.plans[i]
    }

    /// The steps without upstream steps, in step order.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.upstream[i].is_empty())
            .collect()
    }

    /// Every step after its upstream steps; among steps free to go next, the lowest index first.
    pub fn topological_order(&self) -> Vec<usize> {
        self.order.clone()
    }

    /// `i` and everything downstream of it (transitively), in topological order.
    pub fn with_downstream(&self, i: usize) -> Vec<usize> {
        let mut reached = vec![false; self.len()];
        reached[i] = true;
        let mut todo = vec![i];
        while let Some(v) = todo.pop() {
            for &d in &self.downstream[v] {
                if !reached[d] {
                    reached[d] = true;
                    todo.push(d);
                }
            }
        }
        self.order.iter().copied().filter(|&v| reached[v]).collect()
    }
}

/// Validates a workflow's steps, recording every problem in `errs` with its field path under
/// `at` (`steps`). Returns the DAG only if the steps are valid.
pub fn validate_steps(steps: &[StepSpec], at: &str, errs: &mut ValidationErrors) -> Option<Dag> {
    let before = errs.errors.len();
    if steps.is_empty() {
        errs.push(at, "a workflow needs at least one step");
    }
    if steps.len() > MAX_STEPS {
        errs.push(
            at,
            format!("has {} steps; at most {MAX_STEPS}", steps.len()),
        );
    }
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let name_at = path(&index(at, i), "name");
        if let Err(e) = validate_name(&step.name) {
            errs.push(&name_at, e);
        }
        match first.entry(&step.name) {
            Entry::Occupied(o) => errs.push(
                name_at,
                format!(
                    "`{}` is already the name of {}",
                    step.name,
                    index(at, *o.get())
                ),
            ),
            Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
    let mut upstream = Vec::with_capacity(steps.len());
    let mut plans = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let step_at = index(at, i);
        upstream.push(resolve_depends_on(step, &first, &step_at, errs));
        plans.push(validate_step(step, &step_at, errs));
    }
    let mut downstream = vec![Vec::new(); steps.len()];
    for (i, ups) in upstream.iter().enumerate() {
        for &u in ups {
            downstream[u].push(i);
        }
    }
    for cycle in find_cycles(&downstream) {
        let names: Vec<&str> = cycle.iter().map(|&i| steps[i].name.as_str()).collect();
        errs.push(at, format!("cycle {}", names.join(" → ")));
    }
    if errs.errors.len() > before {
        return None;
    }
    let order = topological_order(&upstream, &downstream);
    Some(Dag {
        names: steps.iter().map(|s| s.name.clone()).collect(),
        upstream,
        downstream,
        rules: steps.iter().map(|s| s.trigger_rule).collect(),
        plans,
        order,
    })
}

/// The indices of the steps `step` depends on (each once; unknown and self references left
/// out, and reported).
fn resolve_depends_on(
    step: &StepSpec,
    names: &HashMap<&str, usize>,
    at: &str,
    errs: &mut ValidationErrors,
) -> Vec<usize> {
    let at = path(at, "depends_on");
    if step.depends_on.len() > MAX_STEPS {
        errs.push(
            &at,
            format!("lists {} steps; at most {MAX_STEPS}", step.depends_on.len()),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut upstream = Vec::with_capacity(step.depends_on.len());
    for (j, dep) in step.depends_on.iter().enumerate() {
        let dep_at = index(&at, j);
        match seen.entry(dep) {
            Entry::Occupied(o) => {
                let first = index(&at, *o.get());
                errs.push(dep_at, format!("`{dep}` is listed twice (also {first})"));
                continue;
            }
            Entry::Vacant(v) => {
                v.insert(j);
            }
        }
        if *dep == step.name {
            errs.push(dep_at, "a step cannot depend on itself");
        } else if let Some(&k) = names.get(dep.as_str()) {
            upstream.push(k);
        } else {
            errs.push(dep_at, format!("unknown step `{dep}`"));
        }
    }
    upstream
}

/// Checks what one step holds besides its name and dependencies.
fn validate_step(step: &StepSpec, at: &str, errs: &mut ValidationErrors) -> StepPlan {
    validate_task(&step.task, &path(at, "task"), errs);
    let rule = step.trigger_rule;
    let needs_upstream = matches!(
        rule,
        TriggerRule::OneSuccess | TriggerRule::OneFailed | TriggerRule::AllFailed
    );
    if needs_upstream && step.depends_on.is_empty() {
        errs.push(
            path(at, "trigger_rule"),
            format!(
                "`{}` can never hold for a step without `depends_on`",
                rule.as_str()
            ),
        );
    }
    let timeout = step.timeout.as_ref().and_then(|t| {
        parse_duration(t, false)
            .map_err(|e| errs.push(path(at, "timeout"), e))
            .ok()
    });
    let retry = step
        .retry
        .as_ref()
        .map(|r| validate_retry(r, &path(at, "retry"), errs));
    if let Some(codes) = &step.expected_exit_codes {
        let codes_at = path(at, "expected_exit_codes");
        if codes.is_empty() {
            errs.push(&codes_at, "must list at least one exit code");
        }
        for (i, code) in codes.iter().enumerate() {
            if !(0..=255).contains(code) {
                errs.push(
                    index(&codes_at, i),
                    format!("{code} is not an exit code (0 to 255)"),
                );
            }
        }
    }
    if let Some(hooks) = &step.hooks {
        if let Some(pre) = &hooks.pre {
            validate_hook(pre, &path(at, "hooks.pre"), errs);
        }
        if let Some(post) = &hooks.post {
            validate_hook(post, &path(at, "hooks.post"), errs);
        }
    }
    validate_env(step, &path(at, "env"), errs);
    StepPlan {
        timeout,
        retry,
        expected_exit_codes: step.expected_exit_codes.clone(),
    }
}

fn validate_env(step: &StepSpec, at: &str, errs: &mut ValidationErrors) {
    if step.env.is_empty() {
        return;
    }
    if !matches!(step.task, TaskSpec::Command(_) | TaskSpec::Shell(_)) {
        errs.push(at, "only applies to `command` and `shell` tasks");
    }
    if step.env.len() > MAX_STEP_ENV {
        errs.push(
            at,
            format!("has {} variables; at most {MAX_STEP_ENV}", step.env.len()),
        );
    }
    for (k, v) in &step.env {
        if k.is_empty() || k.len() > MAX_ENV_NAME_LEN || k.contains(['=', '\0']) {
            errs.push(
                path(at, k),
                format!(
                    "variable names are 1 to {MAX_ENV_NAME_LEN} bytes and contain no `=` or NUL"
                ),
            );
        }
        if v.contains('\0') {
            errs.push(path(at, k), "values must not contain NUL");
        }
    }
}

/// One cycle per group of steps that wait for each other in a circle (a strongly connected
/// component of two or more steps; self references are not edges here), groups in the order of
/// their first step. Each cycle starts and ends at the group's first step and follows the first
/// edges (in step order) that lead back to it.
fn find_cycles(downstream: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let components = strongly_connected(downstream);
    let mut component_of = vec![0; downstream.len()];
    for (c, members) in components.iter().enumerate() {
        for &v in members {
            component_of[v] = c;
        }
    }
    let mut visited = vec![false; downstream.len()];
    let mut cycles = Vec::new();
    for members in components.iter().filter(|m| m.len() > 1) {
        let start = members.iter().copied().min().unwrap_or_default();
        let inside = |w: usize| component_of[w] == component_of[start];
        // Depth-first from `start` inside the group: every member leads back to `start`, so the
        // search reaches a step with an edge to it, and the path there is a simple cycle.
        visited[start] = true;
        let mut stack = vec![(start, 0)];
        while let Some(top) = stack.last_mut() {
            let (v, next) = *top;
            let Some(&w) = downstream[v].get(next) else {
                stack.pop();
                continue;
            };
            top.1 += 1;
            if w == start {
                let mut cycle: Vec<usize> = stack.iter().map(|&(v, _)| v).collect();
                cycle.push(start);
                cycles.push(cycle);
                break;
            }
            if inside(w) && !visited[w] {
                visited[w] = true;
                stack.push((w, 0));
            }
        }
    }
    cycles.sort_unstable_by_key(|c| c[0]);
    cycles
}

/// Tarjan's strongly connected components, without recursion (the input may be large when it
/// is refused for its size).
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = edges.len();
    let (mut order, mut low) = (vec![UNSEEN; n], vec![0; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut components, mut counter) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if order[root] != UNSEEN {
            continue;
        }
        let mut work = vec![(root, 0)];
        (order[root], low[root], on_stack[root]) = (counter, counter, true);
        counter += 1;
        stack.push(root);
        while let Some(top) = work.last_mut() {
            let (v, next) = *top;
            if let Some(&w) = edges[v].get(next) {
                top.1 += 1;
                if order[w] == UNSEEN {
                    (order[w], low[w], on_stack[w]) = (counter, counter, true);
                    counter += 1;
                    stack.push(w);
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == order[v] {
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(members);
            }
        }
    }
    components
}

/// Kahn's algorithm, the lowest ready index first. The graph is acyclic here.
fn topological_order(upstream: &[Vec<usize>], downstream: &[Vec<usize>]) -> Vec<usize> {
    let mut pending: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..upstream.len())
        .filter(|&i| pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(upstream.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &downstream[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order
}

/// The rule's verdict for a waiting step given its upstream steps' statuses (in any order).
/// A step without upstream steps runs, whatever the rule.
pub fn verdict(rule: TriggerRule, upstream: &[StepStatus]) -> Verdict {
    use TriggerRule as R;
    if upstream.is_empty() {
        return Verdict::Run;
    }
    let count = |f: fn(StepStatus) -> bool| upstream.iter().filter(|&&s| f(s)).count();
    let succeeded = count(|s| s == StepStatus::Succeeded);
    let failed = count(StepStatus::is_failure);
    let skipped = count(|s| s == StepStatus::Skipped);
    let done = succeeded + failed + skipped == upstream.len();
    match rule {
        R::AllSuccess if failed > 0 => Verdict::UpstreamFailed,
        R::AllSuccess if skipped > 0 => Verdict::Skip,
        R::AllSuccess if done => Verdict::Run,
        R::AllFailed if succeeded + skipped > 0 => Verdict::Skip,
        R::AllFailed if done => Verdict::Run,
        R::AllDone if done => Verdict::Run,
        R::OneSuccess if succeeded > 0 => Verdict::Run,
        R::OneSuccess if done && failed > 0 => Verdict::UpstreamFailed,
        R::OneSuccess if done => Verdict::Skip,
        R::OneFailed if failed > 0 => Verdict::Run,
        R::OneFailed if done => Verdict::Skip,
        R::NoneFailed if failed > 0 => Verdict::UpstreamFailed,
        R::NoneFailed if done => Verdict::Run,
        R::Always => Verdict::Run,
        _ => Verdict::Wait,
    }
}

/// What changes now: every waiting step whose verdict is no longer wait, applied to a fixpoint
/// (a step that becomes `upstream_failed` or `skipped` can decide its downstream steps in the
/// same call; a step that is released becomes `active` and decides nothing further). Returns
/// (step index, new status: `Active`, `UpstreamFailed` or `Skipped`) in topological order.
/// Steps that are not waiting never change.
///
/// One pass in topological order is the fixpoint: a verdict depends only on upstream steps,
/// which come earlier.
///
/// # Panics
/// If `statuses` does not hold one status per step.
pub fn advance(dag: &Dag, statuses: &[StepStatus]) -> Vec<(usize, StepStatus)> {
    assert_eq!(statuses.len(), dag.len(), "one status per step");
    let mut now = statuses.to_vec();
    let mut changes = Vec::new();
    let mut upstream = Vec::new();
    for &i in &dag.order {
        if now[i] != StepStatus::Waiting {
            continue;
        }
        upstream.clear();
        upstream.extend(dag.upstream(i).iter().map(|&u| now[u]));
        now[i] = match verdict(dag.rule(i), &upstream) {
            Verdict::Wait => continue,
            Verdict::Run => StepStatus::Active,
            Verdict::UpstreamFailed => StepStatus::UpstreamFailed,
            Verdict::Skip => StepStatus::Skipped,
        };
        changes.push((i, now[i]));
    }
    changes
}

/// `None` while a step has not ended; `Succeeded` when every step succeeded or was skipped,
/// else `Failed`.
///
/// # Panics
/// If `statuses` does not hold one status per step.
pub fn outcome(dag: &Dag, statuses: &[StepStatus]) -> Option<WorkflowOutcome> {
    assert_eq!(statuses.len(), dag.len(), "one status per step");
    if !statuses.iter().all(|s| s.is_terminal()) {
        return None;
    }
    let ok = statuses
        .iter()
        .all(|s| matches!(s, StepStatus::Succeeded | StepStatus::Skipped));
    Some(if ok {
        WorkflowOutcome::Succeeded
    } else {
        WorkflowOutcome::Failed
    })
}

/// For "rerun failed": the steps to set back to waiting, in topological order: every failed or
/// upstream failed step, plus every skipped step downstream (transitively) of one of them, as
/// its rule may decide differently now. Succeeded steps keep their result, even those whose rule
/// looked at a failure (`all_done`, `one_failed`); active and waiting steps are left alone.
/// The runtime sets the steps back, then calls [`advance`].
///
/// # Panics
/// If `statuses` does not hold one status per step.
pub fn rerun_failed(dag: &Dag, statuses: &[StepStatus]) -> Vec<usize> {
    assert_eq!(statuses.len(), dag.len(), "one status per step");
    // `below[i]`: some step upstream of `i` (transitively) failed or was upstream failed.
    let mut below = vec![false; dag.len()];
    let mut reset = Vec::new();
    for &i in &dag.order {
        below[i] = dag
            .upstream(i)
            .iter()
            .any(|&u| below[u] || statuses[u].is_failure());
        if statuses[i].is_failure() || below[i] && statuses[i] == StepStatus::Skipped {
            reset.push(i);
        }
    }
    reset
}

/// Default `max_concurrent_steps`.
pub const DEFAULT_MAX_CONCURRENT_STEPS: u32 = 16;

/// A validated workflow: its DAG and how many of its steps may be active at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub dag: Dag,
    pub max_concurrent_steps: u32,
}

/// What a store writes to a workflow run after one of its steps changed (see [`progress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Steps to queue now, in topological order.
    pub release: Vec<usize>,
    /// Steps that end without running, with their status (`UpstreamFailed` or `Skipped`).
    pub decide: Vec<(usize, StepStatus)>,
    /// Waiting steps of a run being cancelled: they end `cancelled` without running.
    pub cancel: Vec<usize>,
    /// How the run ends, when no step is left active or waiting.
    pub finish: Option<RunEnd>,
}

/// How a workflow run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed,
    /// It was cancelled and its last active step has ended.
    Cancelled,
}

/// The one decision a store applies whenever a step of a run changes (the run starts, a step
/// ends, a user skips or reruns one): [`advance`], with at most `max_active` steps active at
/// once (ready steps beyond that stay waiting and are released as others end), and the run's
/// end once nothing is left to do. A run being cancelled releases nothing, cancels its waiting
/// steps and ends `Cancelled` when its last active step has ended.
///
/// # Panics
/// If `statuses` does not hold one status per step.
pub fn progress(dag: &Dag, statuses: &[StepStatus], max_active: u32, cancelling: bool) -> Progress {
    let active = statuses
        .iter()
        .filter(|s| **s == StepStatus::Active)
        .count();
    if cancelling {
        return Progress {
            cancel: (0..statuses.len())
                .filter(|&i| statuses[i] == StepStatus::Waiting)
                .collect(),
            finish: (active == 0).then_some(RunEnd::Cancelled),
            ..Progress::default()
        };
    }
    let mut room = (max_active.max(1) as usize).saturating_sub(active);
    let mut now = statuses.to_vec();
    let mut out = Progress::default();
    for (i, status) in advance(dag, statuses) {
        if status == StepStatus::Active {
            if room == 0 {
                continue;
            }
            room -= 1;
            out.release.push(i);
        } else {
            out.decide.push((i, status));
        }
        now[i] = status;
    }
    out.finish = outcome(dag, &now).map(|o| match o {
        WorkflowOutcome::Succeeded => RunEnd::Succeeded,
        WorkflowOutcome::Failed => RunEnd::Failed,
    });
    out
}

impl crate::spec::JobSpec {
    /// The plain job one step of this workflow runs as: the step's task, with the step's
    /// `timeout`, `retry`, `expected_exit_codes` and `hooks` in place of the job's where it
    /// sets them, and its `env` added over the task's own. `None` if there is no such step.
    pub fn step_job(&self, step: &str) -> Option<crate::spec::JobSpec> {
        let s = self.steps.iter().find(|s| s.name == step)?;
        let mut task = s.task.clone();
        if !s.env.is_empty() {
            let process = match &mut task {
                TaskSpec::Command(c) => Some(&mut c.process),
                TaskSpec::Shell(sh) => Some(&mut sh.process),
                _ => None,
            };
            if let Some(p) = process {
                p.env
                    .extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        // Field by field: the workflow's steps (all of them) are not copied for one step.
        let crate::spec::JobSpec {
            name,
            namespace,
            triggers,
            task: _,
            steps: _,
            max_concurrent_steps: _,
            timeout,
            kill_grace,
            retry,
            expected_exit_codes,
            overlap,
            max_concurrent,
            catchup,
            catchup_window,
            execution,
            hooks,
            paused,
            notify: _,
            labels,
            description,
        } = self;
        let job = crate::spec::JobSpec {
            name: name.clone(),
            namespace: namespace.clone(),
            triggers: triggers.clone(),
            task: Some(task),
            steps: Vec::new(),
            max_concurrent_steps: None,
            timeout: s.timeout.clone().or_else(|| timeout.clone()),
            kill_grace: kill_grace.clone(),
            retry: s.retry.clone().or_else(|| retry.clone()),
            expected_exit_codes: s
                .expected_exit_codes
                .clone()
                .unwrap_or_else(|| expected_exit_codes.clone()),
            overlap: *overlap,
            max_concurrent: *max_concurrent,
            catchup: *catchup,
            catchup_window: catchup_window.clone(),
            execution: *execution,
            hooks: s.hooks.clone().unwrap_or_else(|| hooks.clone()),
            paused: *paused,
            // A workflow's alerts are about the workflow run, not its steps.
            notify: Vec::new(),
            labels: labels.clone(),
            description: description.clone(),
        };
        Some(job)
    }
}

/// A user's action on one workflow run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    /// End a step that has not started as `skipped`; its downstream steps decide by their
    /// rules as if it had been skipped by one.
    Skip(usize),
    /// End a step that is not running as `succeeded` (a failed one, or one not started); the
    /// steps below it that did not run because of it (`upstream_failed`, `skipped`) decide
    /// again.
    MarkSucceeded(usize),
    /// Run a step again, and everything downstream of it.
    Rerun(usize),
    /// Run the failed and upstream failed steps again, and the skipped steps below them
    /// ([`rerun_failed`]).
    RerunFailed,
}

/// What a [`StepAction`] writes: steps that end with a status, and steps set back to waiting.
/// The store then settles the run ([`progress`]), which also reopens a run that had ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    pub set: Vec<(usize, StepStatus)>,
    pub reset: Vec<usize>,
}

/// Decides a user's action on a workflow run from its steps' statuses, or says why it is
/// refused. `running[i]`: step `i` has an attempt under way (a queued step is active but not
/// running; only a running one cannot be skipped or marked). The run itself must not be
/// cancelling (the store checks).
///
/// # Panics
/// If `statuses` or `running` does not hold one entry per step.
pub fn control(
    dag: &Dag,
    statuses: &[StepStatus],
    running: &[bool],
    action: StepAction,
) -> Result<Control, String> {
    assert_eq!(statuses.len(), dag.len(), "one status per step");
    assert_eq!(running.len(), dag.len(), "one flag per step");
    let name = |i: usize| dag.name(i).to_owned();
    match action {
        StepAction::Skip(i) => match statuses[i] {
            StepStatus::Waiting | StepStatus::Active if !running[i] => Ok(Control {
                set: vec![(i, StepStatus::Skipped)],
                reset: vec![],
            }),
            StepStatus::Active => Err(format!(
                "step `{}` is running; only a step that has not started can be skipped",
                name(i)
            )),
            s => Err(format!(
                "step `{}` has ended ({}); only a step that has not started can be skipped",
                name(i),
                status_str(s)
            )),
        },
        StepAction::MarkSucceeded(i) => {
            if statuses[i] == StepStatus::Succeeded {
                return Err(format!("step `{}` has succeeded already", name(i)));
            }
            if running[i] {
                return Err(format!(
                    "step `{}` is running; wait for it to end or cancel the run",
                    name(i)
                ));
            }
            // The steps below it that were decided without running, because of it or of a
            // step so decided: they decide again.
            let mut reset = Vec::new();
            let mut touched = vec![false; dag.len()];
            touched[i] = true;
            for &v in &dag.order {
                if v != i
                    && dag.upstream(v).iter().any(|&u| touched[u])
                    && matches!(
                        statuses[v],
                        StepStatus::UpstreamFailed | StepStatus::Skipped
                    )
                {
                    touched[v] = true;
                    reset.push(v);
                }
            }
            Ok(Control {
                set: vec![(i, StepStatus::Succeeded)],
                reset,
            })
        }
        StepAction::Rerun(i) => {
            let steps = dag.with_downstream(i);
            if let Some(&busy) = steps.iter().find(|&&v| statuses[v] == StepStatus::Active) {
                return Err(format!(
                    "step `{}` is {}; a step and the steps below it run again only when none of them is queued or running",
                    name(busy),
                    if running[busy] { "running" } else { "queued" }
                ));
            }
            // The step must be able to run once set back: not held off by an upstream step
            // that failed (or was skipped) and is not run again with it.
            let mut after = statuses.to_vec();
            for &v in &steps {
                after[v] = StepStatus::Waiting;
            }
            let upstream: Vec<StepStatus> = dag.upstream(i).iter().map(|&u| after[u]).collect();
            if matches!(
                verdict(dag.rule(i), &upstream),
                Verdict::UpstreamFailed | Verdict::Skip
            ) {
                return Err(format!(
                    "step `{}` would not run: its upstream steps do not allow it (trigger rule `{}`); rerun them, or the failed steps",
                    name(i),
                    dag.rule(i).as_str()
                ));
            }
            Ok(Control {
                set: vec![],
                reset: steps,
            })
        }
        StepAction::RerunFailed => {
            let reset = rerun_failed(dag, statuses);
            if reset.is_empty() {
                return Err("the run has no failed steps to run again".to_owned());
            }
            Ok(Control { set: vec![], reset })
        }
    }
}

fn status_str(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Waiting => "waiting",
        StepStatus::Active => "active",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::UpstreamFailed => "upstream_failed",
        StepStatus::Skipped => "skipped",
    }
}
