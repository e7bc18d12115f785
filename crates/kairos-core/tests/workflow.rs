//! Workflows: validation of the steps (every problem with its field path, cycles named in
//! order), the trigger rules, and runs simulated with `advance`, `outcome` and `rerun_failed`.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use std::collections::BTreeMap;

use jiff::SignedDuration;
use kairos_core::ValidationErrors;
use kairos_core::policy::RetryOn;
use kairos_core::spec::{ShellTask, TaskSpec};
use kairos_core::workflow::{
    Dag, MAX_STEPS, StepSpec, StepStatus, TriggerRule, Verdict, WorkflowOutcome, advance, outcome,
    rerun_failed, validate_steps, verdict,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

use StepStatus::{Active, Failed, Skipped, Succeeded, UpstreamFailed, Waiting};

/// A step running `true` in a shell, waiting for `deps`.
fn step(name: &str, deps: &[&str]) -> StepSpec {
    StepSpec {
        name: name.to_owned(),
        task: TaskSpec::Shell(ShellTask {
            script: "true".to_owned(),
            process: Default::default(),
            unknown: BTreeMap::new(),
        }),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        trigger_rule: TriggerRule::AllSuccess,
        timeout: None,
        retry: None,
        expected_exit_codes: None,
        hooks: None,
        env: BTreeMap::new(),
    }
}

fn ruled(mut step: StepSpec, rule: TriggerRule) -> StepSpec {
    step.trigger_rule = rule;
    step
}

fn from_json(steps: Value) -> Vec<StepSpec> {
    serde_json::from_value(steps).unwrap()
}

/// Every problem as `(field, message)`; checks that a DAG comes back exactly when there is none.
fn problems(steps: &[StepSpec]) -> Vec<(String, String)> {
    let mut errs = ValidationErrors::default();
    let dag = validate_steps(steps, "steps", &mut errs);
    assert_eq!(dag.is_some(), errs.is_empty(), "{errs}");
    errs.errors
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect()
}

fn problem(field: &str, message: &str) -> (String, String) {
    (field.to_owned(), message.to_owned())
}

fn dag(steps: &[StepSpec]) -> Dag {
    let mut errs = ValidationErrors::default();
    let dag = validate_steps(steps, "steps", &mut errs);
    assert!(errs.is_empty(), "{errs}");
    dag.unwrap()
}

/// The workflow of the issue: extract → transform → load → report, the report written however
/// the load ended.
fn issue_example() -> Value {
    json!([
        {"name": "extract", "task": {"kind": "command", "argv": ["extract.sh"]}, "timeout": "5m"},
        {"name": "transform", "task": {"kind": "shell", "script": "transform --all"},
         "depends_on": ["extract"], "env": {"MODE": "full"},
         "retry": {"max_attempts": 3, "on": ["exit:75"]}},
        {"name": "load", "task": {"kind": "http", "method": "POST", "url": "https://warehouse.example/load"},
         "depends_on": ["transform"], "expected_exit_codes": [0, 3]},
        {"name": "report", "task": {"kind": "function", "name": "send_report"},
         "depends_on": ["load"], "trigger_rule": "all_done",
         "hooks": {"post": {"kind": "shell", "script": "echo done"}}}
    ])
}

#[test]
fn the_issue_example_validates() {
    let steps = from_json(issue_example());
    assert_eq!(steps[3].trigger_rule, TriggerRule::AllDone);
    assert_eq!(steps[0].trigger_rule, TriggerRule::AllSuccess);
    let dag = dag(&steps);
    assert_eq!(dag.len(), 4);
    assert!(!dag.is_empty());
    assert_eq!(dag.name(2), "load");
    assert_eq!(dag.index_of("report"), Some(3));
    assert_eq!(dag.index_of("nope"), None);
    assert_eq!(dag.roots(), [0]);
    assert_eq!(dag.topological_order(), [0, 1, 2, 3]);
    assert_eq!(dag.upstream(1), [0]);
    assert_eq!(dag.downstream(1), [2]);
    assert!(dag.downstream(3).is_empty());
    assert_eq!(dag.rule(3), TriggerRule::AllDone);
    assert_eq!(dag.with_downstream(1), [1, 2, 3]);
    assert_eq!(dag.with_downstream(3), [3]);

    assert_eq!(dag.plan(0).timeout, Some(SignedDuration::from_mins(5)));
    assert_eq!(dag.plan(0).retry, None);
    assert_eq!(dag.plan(0).expected_exit_codes, None);
    let retry = dag.plan(1).retry.as_ref().unwrap();
    assert_eq!(retry.max_attempts, 3);
    assert_eq!(retry.on, [RetryOn::Exit(75)]);
    assert_eq!(dag.plan(1).timeout, None);
    assert_eq!(dag.plan(2).expected_exit_codes, Some(vec![0, 3]));
}

#[test]
fn steps_serialize_without_defaults_and_read_back() {
    let steps = from_json(issue_example());
    let written = serde_json::to_value(&steps).unwrap();
    assert_eq!(written[0].get("trigger_rule"), None);
    assert_eq!(written[0].get("depends_on"), None);
    assert_eq!(written[0].get("env"), None);
    assert_eq!(written[3]["trigger_rule"], "all_done");
    assert_eq!(from_json(written), steps);
}

#[test]
fn unknown_fields_and_rules_are_refused() {
    let unknown = json!([{"name": "a", "task": {"kind": "function", "name": "f"}, "after": ["b"]}]);
    let err = serde_json::from_value::<Vec<StepSpec>>(unknown).unwrap_err();
    assert!(err.to_string().contains("unknown field `after`"), "{err}");
    let rule = json!([{"name": "a", "task": {"kind": "function", "name": "f"}, "trigger_rule": "sometimes"}]);
    assert!(serde_json::from_value::<Vec<StepSpec>>(rule).is_err());
}

#[test]
fn a_workflow_needs_a_step() {
    assert_eq!(
        problems(&[]),
        [problem("steps", "a workflow needs at least one step")]
    );
}

#[test]
fn at_most_max_steps() {
    let steps: Vec<StepSpec> = (0..=MAX_STEPS)
        .map(|i| step(&format!("s{i}"), &[]))
        .collect();
    assert_eq!(
        problems(&steps),
        [problem("steps", "has 501 steps; at most 500")]
    );
    assert!(problems(&steps[..MAX_STEPS]).is_empty());
}

#[test]
fn names_are_valid_and_unique() {
    let steps = [
        step("load", &[]),
        step("Load", &[]),
        step("extract", &[]),
        step("load", &[]),
        step("load", &[]),
    ];
    let found = problems(&steps);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].0, "steps[1].name");
    assert!(found[0].1.starts_with("`Load` is not a valid name"));
    assert_eq!(
        found[1..],
        [
            problem("steps[3].name", "`load` is already the name of steps[0]"),
            problem("steps[4].name", "`load` is already the name of steps[0]"),
        ]
    );
}

#[test]
fn depends_on_names_other_known_steps_once() {
    let steps = [
        step("a", &[]),
        step("b", &["a", "c", "b", "a", "a"]),
        step("c", &[]),
        step("d", &["x"]),
    ];
    assert_eq!(
        problems(&steps),
        [
            problem("steps[1].depends_on[2]", "a step cannot depend on itself"),
            problem(
                "steps[1].depends_on[3]",
                "`a` is listed twice (also steps[1].depends_on[0])"
            ),
            problem(
                "steps[1].depends_on[4]",
                "`a` is listed twice (also steps[1].depends_on[0])"
            ),
            problem("steps[3].depends_on[0]", "unknown step `x`"),
        ]
    );
}

#[test]
fn depends_on_has_at_most_max_steps_entries() {
    let names: Vec<String> = (0..=MAX_STEPS).map(|i| format!("s{i}")).collect();
    let deps: Vec<&str> = names.iter().map(String::as_str).collect();
    let steps = [step("a", &deps)];
    let found = problems(&steps);
    assert!(found.contains(&problem(
        "steps[0].depends_on",
        "lists 501 steps; at most 500"
    )));
    // The entries are checked too.
    assert!(found.contains(&problem("steps[0].depends_on[500]", "unknown step `s500`")));
}

#[test]
fn a_cycle_is_named_in_order() {
    let steps = [step("a", &["c"]), step("b", &["a"]), step("c", &["b"])];
    assert_eq!(problems(&steps), [problem("steps", "cycle a → b → c → a")]);

    let steps = [
        step("extract", &[]),
        step("transform", &["extract", "load"]),
        step("load", &["transform"]),
        step("report", &["load"]),
    ];
    assert_eq!(
        problems(&steps),
        [problem("steps", "cycle transform → load → transform")]
    );
}

#[test]
fn each_knot_of_cycles_is_reported_once() {
    // Two separate knots; the first holds two cycles through `a` (a → b → a, a → c → a).
    let steps = [
        step("a", &["b", "c"]),
        step("b", &["a"]),
        step("c", &["a"]),
        step("d", &[]),
        step("e", &["f", "d"]),
        step("f", &["e"]),
    ];
    assert_eq!(
        problems(&steps),
        [
            problem("steps", "cycle a → b → a"),
            problem("steps", "cycle e → f → e"),
        ]
    );
}

#[test]
fn rules_that_need_upstream_steps_are_refused_on_roots() {
    for rule in TriggerRule::ALL {
        let steps = [ruled(step("a", &[]), rule), ruled(step("b", &["a"]), rule)];
        let needs_upstream = matches!(
            rule,
            TriggerRule::OneSuccess | TriggerRule::OneFailed | TriggerRule::AllFailed
        );
        let expected = if needs_upstream {
            vec![problem(
                "steps[0].trigger_rule",
                &format!(
                    "`{}` can never hold for a step without `depends_on`",
                    rule.as_str()
                ),
            )]
        } else {
            vec![]
        };
        assert_eq!(problems(&steps), expected, "{rule:?}");
    }
}

#[test]
fn each_step_is_checked_like_a_job() {
    let steps = from_json(json!([
        {"name": "a", "task": {"kind": "command", "argv": []}, "timeout": "0s",
         "retry": {"max_attempts": 0, "on": ["never"]},
         "hooks": {"pre": {"kind": "shell", "script": " "}, "post": {"kind": "command", "argv": [""]}}},
        {"name": "b", "task": {"kind": "shell", "script": "x"}, "depends_on": ["a"],
         "expected_exit_codes": [], "timeout": "ten"},
        {"name": "c", "task": {"kind": "shell", "script": "x"}, "expected_exit_codes": [0, 256, -1]},
    ]));
    let found = problems(&steps);
    let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "steps[0].task.argv",
            "steps[0].timeout",
            "steps[0].retry.max_attempts",
            "steps[0].retry.on[0]",
            "steps[0].hooks.pre.script",
            "steps[0].hooks.post.argv",
            "steps[1].timeout",
            "steps[1].expected_exit_codes",
            "steps[2].expected_exit_codes[1]",
            "steps[2].expected_exit_codes[2]",
        ]
    );
    assert_eq!(found[1].1, "`0s` is zero; it must be greater than zero");
    assert_eq!(found[7].1, "must list at least one exit code");
    assert_eq!(found[8].1, "256 is not an exit code (0 to 255)");
}

#[test]
fn step_env_is_checked() {
    let long = "K".repeat(257);
    let mut env = json!({"": "x", "A=B": "x", "NUL\u{0}": "x", "V": "a\u{0}b", "OK": "fine"});
    env[&long] = json!("x");
    let steps = from_json(json!([
        {"name": "a", "task": {"kind": "shell", "script": "x"}, "env": env},
        {"name": "b", "task": {"kind": "http", "url": "https://example.com"}, "env": {"A": "1"}},
        {"name": "c", "task": {"kind": "function", "name": "f"}, "env": {"A": "1"}},
    ]));
    let name_rule = "variable names are 1 to 256 bytes and contain no `=` or NUL";
    let mut expected = vec![
        problem("steps[0].env.", name_rule),
        problem("steps[0].env.A=B", name_rule),
        problem(&format!("steps[0].env.{long}"), name_rule),
        problem("steps[0].env.NUL\u{0}", name_rule),
        problem("steps[0].env.V", "values must not contain NUL"),
        problem(
            "steps[1].env",
            "only applies to `command` and `shell` tasks",
        ),
        problem(
            "steps[2].env",
            "only applies to `command` and `shell` tasks",
        ),
    ];
    let mut found = problems(&steps);
    found.sort();
    expected.sort();
    assert_eq!(found, expected);

    let many: BTreeMap<String, String> = (0..65).map(|i| (format!("V{i}"), "x".into())).collect();
    let mut too_many = step("a", &[]);
    too_many.env = many.clone();
    assert_eq!(
        problems(&[too_many.clone()]),
        [problem("steps[0].env", "has 65 variables; at most 64")]
    );
    too_many.env = many.into_iter().take(64).collect();
    assert!(problems(&[too_many]).is_empty());
}

/// Verdicts for each upstream combination, one letter per rule in the order of
/// `TriggerRule::ALL` (all_success, all_done, all_failed, one_success, one_failed, none_failed,
/// always): `R` run, `W` wait, `U` upstream failed, `K` skip. Upstream statuses: `S` succeeded,
/// `F` failed, `X` upstream failed, `K` skipped, `W` waiting, `A` active.
const VERDICTS: &[(&str, &str)] = &[
    ("", "RRRRRRR"),
    ("S", "RRKRKRR"),
    ("F", "URRURUR"),
    ("X", "URRURUR"),
    ("K", "KRKKKRR"),
    ("W", "WWWWWWR"),
    ("A", "WWWWWWR"),
    ("SS", "RRKRKRR"),
    ("FX", "URRURUR"),
    ("KK", "KRKKKRR"),
    ("SF", "URKRRUR"),
    ("SK", "KRKRKRR"),
    ("FK", "URKURUR"),
    ("XK", "URKURUR"),
    ("SW", "WWKRWWR"),
    ("SA", "WWKRWWR"),
    ("FW", "UWWWRUR"),
    ("XA", "UWWWRUR"),
    ("KW", "KWKWWWR"),
    ("SSW", "WWKRWWR"),
    ("FFW", "UWWWRUR"),
    ("SFK", "URKRRUR"),
    ("SFW", "UWKRRUR"),
    ("SKW", "KWKRWWR"),
    ("FKW", "UWKWRUR"),
];

fn status(c: char) -> StepStatus {
    match c {
        'S' => Succeeded,
        'F' => Failed,
        'X' => UpstreamFailed,
        'K' => Skipped,
        'W' => Waiting,
        'A' => Active,
        _ => panic!("no status `{c}`"),
    }
}

fn verdict_of(c: char) -> Verdict {
    match c {
        'R' => Verdict::Run,
        'W' => Verdict::Wait,
        'U' => Verdict::UpstreamFailed,
        'K' => Verdict::Skip,
        _ => panic!("no verdict `{c}`"),
    }
}

#[test]
fn verdict_table() {
    for (upstream, verdicts) in VERDICTS {
        let mut upstream: Vec<StepStatus> = upstream.chars().map(status).collect();
        for (rule, expected) in TriggerRule::ALL.into_iter().zip(verdicts.chars()) {
            let expected = verdict_of(expected);
            assert_eq!(verdict(rule, &upstream), expected, "{rule:?} {upstream:?}");
            upstream.reverse();
            assert_eq!(verdict(rule, &upstream), expected, "{rule:?} {upstream:?}");
        }
    }
}

#[test]
fn advance_releases_roots_and_always_steps_then_propagates_failures() {
    let steps = [
        step("a", &[]),
        step("b", &["a"]),
        step("c", &["b"]),
        ruled(step("d", &["c"]), TriggerRule::Always),
        ruled(step("e", &["c"]), TriggerRule::AllDone),
        step("f", &[]),
    ];
    let dag = dag(&steps);
    let mut statuses = vec![Waiting; 6];
    assert_eq!(
        advance(&dag, &statuses),
        [(0, Active), (3, Active), (5, Active)]
    );
    assert_eq!(outcome(&dag, &statuses), None);
    statuses[0] = Failed;
    statuses[3] = Active;
    statuses[5] = Succeeded;
    // `b` and `c` fail at once; `e` is released by them in the same call.
    assert_eq!(
        advance(&dag, &statuses),
        [(1, UpstreamFailed), (2, UpstreamFailed), (4, Active)]
    );
}

#[test]
fn a_released_step_decides_nothing_further() {
    let steps = [
        step("a", &[]),
        step("b", &["a"]),
        ruled(step("c", &["a"]), TriggerRule::AllFailed),
    ];
    let dag = dag(&steps);
    let statuses = [Succeeded, Waiting, Waiting];
    assert_eq!(advance(&dag, &statuses), [(1, Active), (2, Skipped)]);
    assert!(advance(&dag, &[Succeeded, Active, Skipped]).is_empty());
}

#[test]
fn outcome_counts_skipped_steps_as_success() {
    let dag = dag(&[step("a", &[]), step("b", &["a"])]);
    assert_eq!(outcome(&dag, &[Succeeded, Active]), None);
    assert_eq!(outcome(&dag, &[Succeeded, Waiting]), None);
    assert_eq!(
        outcome(&dag, &[Succeeded, Skipped]),
        Some(WorkflowOutcome::Succeeded)
    );
    assert_eq!(
        outcome(&dag, &[Failed, UpstreamFailed]),
        Some(WorkflowOutcome::Failed)
    );
    assert_eq!(
        outcome(&dag, &[Skipped, UpstreamFailed]),
        Some(WorkflowOutcome::Failed)
    );
}

#[test]
fn rerun_failed_resets_failures_and_the_skips_below_them() {
    let steps = [
        step("extract", &[]),
        step("transform", &["extract"]),
        step("load", &["transform"]),
        ruled(
            step("cleanup", &["transform", "extract"]),
            TriggerRule::AllFailed,
        ),
        ruled(step("report", &["load"]), TriggerRule::AllDone),
        ruled(step("alert", &["transform"]), TriggerRule::OneFailed),
    ];
    let dag = dag(&steps);
    let end = [
        Succeeded,
        Failed,
        UpstreamFailed,
        Skipped,
        Succeeded,
        Succeeded,
    ];
    assert_eq!(outcome(&dag, &end), Some(WorkflowOutcome::Failed));
    let reset = rerun_failed(&dag, &end);
    assert_eq!(reset, [1, 2, 3]);

    let mut statuses = end.to_vec();
    for &i in &reset {
        statuses[i] = Waiting;
    }
    // `cleanup` is skipped again at once: `extract` succeeded.
    assert_eq!(advance(&dag, &statuses), [(1, Active), (3, Skipped)]);
    statuses[1] = Succeeded;
    statuses[3] = Skipped;
    assert_eq!(advance(&dag, &statuses), [(2, Active)]);
    statuses[2] = Succeeded;
    assert!(advance(&dag, &statuses).is_empty());
    assert_eq!(outcome(&dag, &statuses), Some(WorkflowOutcome::Succeeded));
}

/// A random acyclic workflow: edges only from lower to higher indices; rules that need
/// upstream steps only on steps that have some. Each step ends, when released, as `ok` says
/// after `rounds` rounds (1 to 3).
#[derive(Debug, Clone)]
struct Workflow {
    steps: Vec<StepSpec>,
    ok: Vec<bool>,
    rounds: Vec<u8>,
}

fn name(i: usize) -> String {
    format!("s{i}")
}

fn workflow() -> impl Strategy<Value = Workflow> {
    (1usize..=12)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(prop::collection::vec(prop::bool::weighted(0.3), n), n),
                prop::collection::vec(prop::sample::select(TriggerRule::ALL.to_vec()), n),
                prop::collection::vec(prop::bool::weighted(0.7), n),
                prop::collection::vec(1u8..=3, n),
            )
        })
        .prop_map(|(edges, rules, ok, rounds)| {
            let steps = (0..rules.len())
                .map(|j| {
                    let deps: Vec<String> = (0..j).filter(|&i| edges[j][i]).map(name).collect();
                    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                    let needs_upstream = matches!(
                        rules[j],
                        TriggerRule::OneSuccess | TriggerRule::OneFailed | TriggerRule::AllFailed
                    );
                    let rule = if deps.is_empty() && needs_upstream {
                        TriggerRule::AllSuccess
                    } else {
                        rules[j]
                    };
                    ruled(step(&name(j), &deps), rule)
                })
                .collect();
            Workflow { steps, ok, rounds }
        })
}

fn upstream_statuses(dag: &Dag, statuses: &[StepStatus], i: usize) -> Vec<StepStatus> {
    dag.upstream(i).iter().map(|&u| statuses[u]).collect()
}

/// Runs a workflow from `statuses` to its end: `advance`, then end released steps after their
/// rounds as `ok` says. Checks each change against the rule at that moment, that `advance`
/// reaches a fixpoint, that no step is released twice and that the run ends.
fn run_to_end(
    dag: &Dag,
    statuses: &mut [StepStatus],
    ok: &[bool],
    rounds: &[u8],
) -> Result<Vec<bool>, TestCaseError> {
    let n = dag.len();
    let mut released = vec![false; n];
    let mut age = vec![0u8; n];
    for _ in 0..=3 * n + 1 {
        for (i, next) in advance(dag, statuses) {
            prop_assert_eq!(statuses[i], Waiting);
            let expected = match verdict(dag.rule(i), &upstream_statuses(dag, statuses, i)) {
                Verdict::Run => Active,
                Verdict::UpstreamFailed => UpstreamFailed,
                Verdict::Skip => Skipped,
                Verdict::Wait => return Err(TestCaseError::fail(format!("{i} was waiting"))),
            };
            prop_assert_eq!(next, expected, "step {}", i);
            if next == Active {
                prop_assert!(!released[i], "step {} released twice", i);
                released[i] = true;
            }
            statuses[i] = next;
        }
        for i in 0..n {
            if statuses[i] == Waiting {
                let up = upstream_statuses(dag, statuses, i);
                prop_assert_eq!(verdict(dag.rule(i), &up), Verdict::Wait, "step {}", i);
            }
        }
        prop_assert!(advance(dag, statuses).is_empty());
        if !statuses.contains(&Active) {
            prop_assert!(statuses.iter().all(|s| s.is_terminal()), "{:?}", statuses);
            return Ok(released);
        }
        prop_assert_eq!(outcome(dag, statuses), None);
        for i in 0..n {
            if statuses[i] == Active {
                age[i] += 1;
                if age[i] >= rounds[i] {
                    statuses[i] = if ok[i] { Succeeded } else { Failed };
                }
            }
        }
    }
    Err(TestCaseError::fail("the run did not end"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A run released step by step follows the rules, ends with every step ended, and its
    /// outcome is known exactly then.
    #[test]
    fn runs_follow_the_rules_and_end(w in workflow()) {
        let dag = dag(&w.steps);
        let mut statuses = vec![Waiting; dag.len()];
        let released = run_to_end(&dag, &mut statuses, &w.ok, &w.rounds)?;
        for i in 0..dag.len() {
            prop_assert_eq!(released[i], matches!(statuses[i], Succeeded | Failed));
        }
        let succeeded = statuses.iter().all(|s| matches!(s, Succeeded | Skipped));
        let expected = if succeeded { WorkflowOutcome::Succeeded } else { WorkflowOutcome::Failed };
        prop_assert_eq!(outcome(&dag, &statuses), Some(expected));
    }

    /// Rerunning the failures of a failed run resets exactly the failures and the skips below
    /// them; when the reset steps all succeed, the workflow succeeds.
    #[test]
    fn rerun_failed_can_end_in_success(w in workflow()) {
        let dag = dag(&w.steps);
        let n = dag.len();
        let mut statuses = vec![Waiting; n];
        run_to_end(&dag, &mut statuses, &w.ok, &w.rounds)?;
        let before = statuses.clone();
        let reset = rerun_failed(&dag, &before);
        prop_assert_eq!(reset.is_empty(), outcome(&dag, &before) == Some(WorkflowOutcome::Succeeded));
        let order = dag.topological_order();
        let position = |i: usize| order.iter().position(|&o| o == i).unwrap();
        prop_assert!(reset.windows(2).all(|w| position(w[0]) < position(w[1])));
        for i in 0..n {
            let failed = matches!(before[i], Failed | UpstreamFailed);
            let below_failure = (0..n).any(|u| {
                u != i && matches!(before[u], Failed | UpstreamFailed) && dag.with_downstream(u).contains(&i)
            });
            let expected = failed || before[i] == Skipped && below_failure;
            prop_assert_eq!(reset.contains(&i), expected, "step {}", i);
        }

        for &i in &reset {
            statuses[i] = Waiting;
        }
        let released = run_to_end(&dag, &mut statuses, &vec![true; n], &w.rounds)?;
        prop_assert_eq!(outcome(&dag, &statuses), Some(WorkflowOutcome::Succeeded));
        for i in 0..n {
            if !reset.contains(&i) {
                prop_assert_eq!(statuses[i], before[i], "step {} kept its status", i);
                prop_assert!(!released[i]);
            } else if before[i] == Failed && dag.upstream(i).iter().all(|u| !reset.contains(u)) {
                prop_assert_eq!(statuses[i], Succeeded, "step {} ran again", i);
            }
        }
    }

    /// The DAG's queries agree with the steps it was built from.
    #[test]
    fn dag_queries_agree_with_the_steps(w in workflow()) {
        let dag = dag(&w.steps);
        let n = dag.len();
        let order = dag.topological_order();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        // The steps were generated in a topological order, which Kahn's (lowest index first) keeps.
        prop_assert_eq!(&order, &(0..n).collect::<Vec<_>>());
        for (i, s) in w.steps.iter().enumerate() {
            prop_assert_eq!(dag.name(i), s.name.as_str());
            prop_assert_eq!(dag.index_of(&s.name), Some(i));
            prop_assert_eq!(dag.rule(i), s.trigger_rule);
            let up: Vec<usize> = s.depends_on.iter().map(|d| dag.index_of(d).unwrap()).collect();
            prop_assert_eq!(dag.upstream(i), up.as_slice());
            let down: Vec<usize> = (0..n)
                .filter(|&j| w.steps[j].depends_on.contains(&s.name))
                .collect();
            prop_assert_eq!(dag.downstream(i), down.as_slice());
            // `with_downstream` is the closure of `downstream`.
            let mut reach = vec![false; n];
            reach[i] = true;
            for j in i + 1..n {
                reach[j] = dag.upstream(j).iter().any(|&u| reach[u]);
            }
            let expected: Vec<usize> = (0..n).filter(|&j| reach[j]).collect();
            prop_assert_eq!(dag.with_downstream(i), expected);
        }
        let roots: Vec<usize> = (0..n).filter(|&i| w.steps[i].depends_on.is_empty()).collect();
        prop_assert_eq!(dag.roots(), roots);
    }

    /// Steps with a cycle planted among random acyclic edges are refused with errors at
    /// `steps` that each name a real cycle.
    #[test]
    fn cycles_are_refused_and_named(
        w in workflow(),
        planted in prop::collection::vec(any::<prop::sample::Index>(), 2..=6),
        extra in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut steps: Vec<StepSpec> = w.steps.into_iter()
            .map(|s| ruled(s, TriggerRule::AllSuccess))
            .collect();
        let n = steps.len();
        prop_assume!(n >= 2);
        // A cycle through distinct steps, then perhaps more backward edges.
        let mut cycle: Vec<usize> = Vec::new();
        for p in &planted {
            let i = p.index(n);
            if !cycle.contains(&i) {
                cycle.push(i);
            }
        }
        prop_assume!(cycle.len() >= 2);
        let mut edges: Vec<(usize, usize)> = (0..cycle.len())
            .map(|k| (cycle[k], cycle[(k + 1) % cycle.len()]))
            .collect();
        for pair in extra.chunks(2).filter(|c| c.len() == 2) {
            edges.push((pair[0].index(n), pair[1].index(n)));
        }
        for (from, to) in edges {
            let from_name = name(from);
            if from != to && !steps[to].depends_on.contains(&from_name) {
                steps[to].depends_on.push(from_name);
            }
        }

        let found = problems(&steps);
        prop_assert!(!found.is_empty());
        for (field, message) in &found {
            prop_assert_eq!(field, "steps");
            let path = message.strip_prefix("cycle ");
            prop_assert!(path.is_some(), "{}", message);
            let path: Vec<usize> = path
                .unwrap()
                .split(" → ")
                .map(|s| s[1..].parse().unwrap())
                .collect();
            prop_assert!(path.len() >= 3, "{}", message);
            prop_assert_eq!(path.first(), path.last());
            let mut inner = path[1..].to_vec();
            inner.sort_unstable();
            inner.dedup();
            prop_assert_eq!(inner.len(), path.len() - 1, "a simple cycle: {}", message);
            for edge in path.windows(2) {
                prop_assert!(
                    steps[edge[1]].depends_on.contains(&name(edge[0])),
                    "{} → {} is not an edge in {}", edge[0], edge[1], message
                );
            }
        }
    }
}

// ---- The job document: `task` or `steps`, and the plain job each step runs as ----

fn job(v: Value) -> Result<kairos_core::JobPlan, Vec<(String, String)>> {
    let spec: kairos_core::JobSpec = serde_json::from_value(v).unwrap();
    spec.validate()
        .map_err(|e| e.errors.into_iter().map(|e| (e.field, e.message)).collect())
}

#[test]
fn a_job_has_exactly_one_of_task_and_steps() {
    let task = json!({"kind": "shell", "script": "true"});
    let steps = json!([{"name": "a", "task": task}]);
    let plan = job(json!({"name": "j", "steps": steps})).unwrap();
    let flow = plan.workflow.unwrap();
    assert_eq!(flow.dag.len(), 1);
    assert_eq!(flow.max_concurrent_steps, 16);
    assert!(
        job(json!({"name": "j", "task": task}))
            .unwrap()
            .workflow
            .is_none()
    );
    assert_eq!(
        job(json!({"name": "j", "task": task, "steps": steps})).unwrap_err(),
        vec![problem("steps", "set exactly one of `task` and `steps`")]
    );
    assert_eq!(
        job(json!({"name": "j"})).unwrap_err(),
        vec![problem("task", "set exactly one of `task` and `steps`")]
    );
    assert_eq!(
        job(json!({"name": "j", "task": task, "max_concurrent_steps": 2})).unwrap_err(),
        vec![problem(
            "max_concurrent_steps",
            "only applies to a workflow (`steps`)"
        )]
    );
    assert_eq!(
        job(json!({"name": "j", "steps": steps, "max_concurrent_steps": 0})).unwrap_err(),
        vec![problem("max_concurrent_steps", "must be between 1 and 500")]
    );
    // Problems in the steps come with their paths, beside the job's own.
    let errs = job(json!({"name": "J", "steps": [
        {"name": "a", "depends_on": ["b"], "task": task},
        {"name": "b", "depends_on": ["a"], "task": task},
    ]}))
    .unwrap_err();
    assert!(errs.iter().any(|(f, _)| f == "name"), "{errs:?}");
    assert!(
        errs.contains(&problem("steps", "cycle a → b → a")),
        "{errs:?}"
    );
}

#[test]
fn a_step_runs_as_the_job_with_its_overrides() {
    let spec: kairos_core::JobSpec = serde_json::from_value(json!({
        "name": "j",
        "timeout": "1h",
        "retry": {"max_attempts": 2},
        "expected_exit_codes": [0, 3],
        "steps": [
            {"name": "plain", "task": {"kind": "shell", "script": "true"}},
            {"name": "tuned", "task": {"kind": "shell", "script": "true", "env": {"A": "task", "B": "task"}},
             "timeout": "5m", "retry": {"max_attempts": 4}, "expected_exit_codes": [7],
             "env": {"B": "step", "C": "step"}},
        ]
    }))
    .unwrap();
    let plain = spec.step_job("plain").unwrap();
    assert!(plain.steps.is_empty() && plain.task.is_some());
    assert_eq!(plain.timeout.as_deref(), Some("1h"));
    assert_eq!(plain.expected_exit_codes, vec![0, 3]);
    let plan = plain.validate().unwrap();
    assert_eq!(plan.retry.max_attempts, 2);
    let tuned = spec.step_job("tuned").unwrap();
    let plan = tuned.validate().unwrap();
    assert_eq!(plan.timeout, Some(SignedDuration::from_mins(5)));
    assert_eq!(plan.retry.max_attempts, 4);
    assert_eq!(tuned.expected_exit_codes, vec![7]);
    let Some(TaskSpec::Shell(shell)) = &tuned.task else {
        panic!("a shell task")
    };
    let env: Vec<(&str, &str)> = shell
        .process
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, vec![("A", "task"), ("B", "step"), ("C", "step")]);
    assert!(spec.step_job("missing").is_none());
}

#[test]
fn progress_holds_releases_to_the_limit_and_ends_the_run() {
    use kairos_core::workflow::{Progress, RunEnd, progress};
    let steps = vec![
        step("a", &[]),
        step("b", &[]),
        step("c", &[]),
        step("d", &["a"]),
    ];
    let d = dag(&steps);
    // Three roots, room for two.
    let p = progress(&d, &[Waiting, Waiting, Waiting, Waiting], 2, false);
    assert_eq!(p.release, vec![0, 1]);
    assert!(p.decide.is_empty() && p.finish.is_none());
    // a failed: d is decided at once; b holds one slot, c takes the other.
    let p = progress(&d, &[Failed, Active, Waiting, Waiting], 2, false);
    assert_eq!(p.release, vec![2]);
    assert_eq!(p.decide, vec![(3, UpstreamFailed)]);
    assert_eq!(p.finish, None);
    // Everything ended: the run's outcome.
    let p = progress(&d, &[Succeeded, Succeeded, Skipped, Waiting], 2, false);
    assert_eq!(p.release, vec![3]);
    let p = progress(&d, &[Succeeded, Succeeded, Skipped, Succeeded], 2, false);
    assert_eq!(p.finish, Some(RunEnd::Succeeded));
    let p = progress(&d, &[Failed, Succeeded, Succeeded, Waiting], 2, false);
    assert_eq!(p.finish, Some(RunEnd::Failed));
    // Cancelling: nothing released, the end comes with the last active step.
    let p = progress(&d, &[Active, Succeeded, Waiting, Waiting], 2, true);
    assert_eq!(
        p,
        Progress {
            cancel: vec![2, 3],
            ..Progress::default()
        }
    );
    let p = progress(&d, &[Failed, Waiting, Waiting, Waiting], 2, true);
    assert_eq!(p.cancel, vec![1, 2, 3]);
    assert_eq!(p.finish, Some(RunEnd::Cancelled));
}

#[test]
fn type_errors_inside_a_steps_task_and_hooks_have_their_paths() {
    let doc = r#"{"name":"j","steps":[
        {"name":"a","task":{"kind":"shell","script":"true"}},
        {"name":"b","depends_on":["a"],"task":{"kind":"command","argv":"x","env":{"A":1}},
         "hooks":{"pre":{"kind":"nope"}}}]}"#;
    let errs = kairos_core::JobSpec::from_json(doc).unwrap_err();
    let mut fields: Vec<&str> = errs.errors.iter().map(|e| e.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "steps[1].hooks.pre.kind",
            "steps[1].task.argv",
            "steps[1].task.env.A"
        ],
        "{errs}"
    );
}

#[test]
fn control_decides_manual_actions_or_says_why_not() {
    use kairos_core::workflow::{Control, StepAction, control};
    // a → b → c, and a → d (all_done).
    let steps = vec![
        step("a", &[]),
        step("b", &["a"]),
        step("c", &["b"]),
        ruled(step("d", &["a"]), TriggerRule::AllDone),
    ];
    let d = dag(&steps);
    let idle = [false; 4];
    // Skip: only a step that has not started.
    assert_eq!(
        control(
            &d,
            &[Active, Waiting, Waiting, Waiting],
            &idle,
            StepAction::Skip(0)
        ),
        Ok(Control {
            set: vec![(0, Skipped)],
            reset: vec![]
        })
    );
    let running = [true, false, false, false];
    let refused = control(
        &d,
        &[Active, Waiting, Waiting, Waiting],
        &running,
        StepAction::Skip(0),
    );
    assert!(refused.unwrap_err().contains("is running"));
    let refused = control(
        &d,
        &[Succeeded, Active, Waiting, Active],
        &idle,
        StepAction::Skip(0),
    );
    assert!(refused.unwrap_err().contains("has ended"));
    // Mark succeeded: what it held back decides again, what ran keeps its result.
    assert_eq!(
        control(
            &d,
            &[Failed, UpstreamFailed, UpstreamFailed, Succeeded],
            &idle,
            StepAction::MarkSucceeded(0)
        ),
        Ok(Control {
            set: vec![(0, Succeeded)],
            reset: vec![1, 2]
        })
    );
    assert!(
        control(
            &d,
            &[Succeeded, Active, Waiting, Active],
            &idle,
            StepAction::MarkSucceeded(0)
        )
        .unwrap_err()
        .contains("succeeded already")
    );
    // Rerun: the step and everything below it, none of them active.
    assert_eq!(
        control(
            &d,
            &[Succeeded, Succeeded, Failed, Succeeded],
            &idle,
            StepAction::Rerun(1)
        ),
        Ok(Control {
            set: vec![],
            reset: vec![1, 2]
        })
    );
    assert!(
        control(
            &d,
            &[Succeeded, Succeeded, Failed, Active],
            &idle,
            StepAction::Rerun(0)
        )
        .unwrap_err()
        .contains("`d` is queued")
    );
    // A step held off by a failed upstream step that is not run again would not run.
    let refused = control(
        &d,
        &[Failed, UpstreamFailed, UpstreamFailed, Succeeded],
        &idle,
        StepAction::Rerun(1),
    );
    assert!(refused.unwrap_err().contains("would not run"));
    // Rerun failed: the failures and what they held back; nothing failed, nothing to do.
    assert_eq!(
        control(
            &d,
            &[Failed, UpstreamFailed, UpstreamFailed, Succeeded],
            &idle,
            StepAction::RerunFailed
        ),
        Ok(Control {
            set: vec![],
            reset: vec![0, 1, 2]
        })
    );
    assert!(
        control(&d, &[Succeeded; 4], &idle, StepAction::RerunFailed)
            .unwrap_err()
            .contains("no failed steps")
    );
}
