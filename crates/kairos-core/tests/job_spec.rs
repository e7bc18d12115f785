//! `JobSpec::from_json` + `JobSpec::validate`: the example job of the issue becomes a plan, and
//! a bad job gets one response that lists every problem with its field path.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failed unwrap fails the test"
)]

use jiff::{SignedDuration, Timestamp};
use kairos_core::policy::RetryOn;
use kairos_core::spec::{CatchupPolicy, ExecutionMode, OverlapPolicy, TaskSpec};
use kairos_core::trigger::{Fire, TriggerKind};
use kairos_core::{JobSpec, ValidationErrors};
use serde_json::{Value, json};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const EXAMPLE: &str = r#"{"name":"backup-db","namespace":"default","triggers":[{"cron":"0 30 2 * * *","timezone":"Europe/Berlin","jitter":"30s"},{"interval":"15m","start_at":"2026-01-01T00:00:00Z","end_at":null},{"at":"2026-12-24T18:00:00Z"}],"task":{"kind":"command","argv":["pg_dump","-f","/backups/db.sql"],"cwd":"/srv","env":{"PGHOST":"db"},"env_files":[],"secret_files":{"PGPASSWORD":"/run/secrets/pg"}},"timeout":"10m","kill_grace":"10s","retry":{"max_attempts":3,"backoff":{"initial":"10s","max":"10m","multiplier":2.0,"jitter":0.2},"on":["exit:1","exit:75","timeout"]},"expected_exit_codes":[0],"overlap":"forbid","max_concurrent":1,"catchup":"latest","catchup_window":"1h","execution":"at_least_once","hooks":{"pre":null,"post":null},"paused":false,"labels":{"team":"data"},"description":"nightly dump"}"#;

#[test]
fn the_example_job_parses_and_validates() {
    let spec = JobSpec::from_json(EXAMPLE).unwrap();
    assert_eq!(spec.name, "backup-db");
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("data"));
    let Some(TaskSpec::Command(task)) = &spec.task else {
        panic!("a command task")
    };
    assert_eq!(task.argv, ["pg_dump", "-f", "/backups/db.sql"]);
    assert_eq!(task.process.cwd.as_deref(), Some("/srv"));
    assert_eq!(
        task.process
            .secret_files
            .get("PGPASSWORD")
            .map(String::as_str),
        Some("/run/secrets/pg")
    );
    assert!(task.unknown.is_empty());

    let plan = spec.validate().unwrap();
    assert_eq!(plan.timeout, Some(SignedDuration::from_mins(10)));
    assert_eq!(plan.kill_grace, SignedDuration::from_secs(10));
    assert_eq!(plan.catchup, CatchupPolicy::Latest);
    assert_eq!(plan.catchup_window, SignedDuration::from_hours(1));
    assert_eq!(plan.overlap, OverlapPolicy::Forbid);
    assert_eq!(plan.max_concurrent, 1);
    assert_eq!(plan.execution, ExecutionMode::AtLeastOnce);
    assert_eq!(plan.retry.max_attempts, 3);
    assert_eq!(plan.retry.initial, SignedDuration::from_secs(10));
    assert_eq!(plan.retry.max, SignedDuration::from_mins(10));
    assert_eq!(plan.retry.multiplier, 2.0);
    assert_eq!(plan.retry.jitter, 0.2);
    assert_eq!(
        plan.retry.on,
        [RetryOn::Exit(1), RetryOn::Exit(75), RetryOn::Timeout]
    );

    let triggers = &plan.schedule.triggers;
    assert_eq!(triggers.len(), 3);
    assert!(matches!(&triggers[0].kind, TriggerKind::Cron(c) if c.is_fixed_time()));
    assert_eq!(triggers[0].jitter, Some(SignedDuration::from_secs(30)));
    assert!(
        matches!(triggers[1].kind, TriggerKind::Interval { every } if every == SignedDuration::from_mins(15))
    );
    assert_eq!(triggers[1].start_at, Some(ts("2026-01-01T00:00:00Z")));
    assert_eq!(triggers[1].end_at, None);
    assert!(matches!(triggers[2].kind, TriggerKind::At(at) if at == ts("2026-12-24T18:00:00Z")));

    // 02:30 Berlin (01:30 UTC in winter, the cron trigger wins the tie), the interval, and at
    // 18:00 on 24 December the interval and the one-off instant coincide.
    let fire = |at: &str, trigger| Fire {
        at: ts(at),
        trigger,
    };
    assert_eq!(
        plan.schedule.upcoming(ts("2026-01-02T01:20:00Z"), 3),
        [
            fire("2026-01-02T01:30:00Z", 0),
            fire("2026-01-02T01:45:00Z", 1),
            fire("2026-01-02T02:00:00Z", 1)
        ]
    );
    assert_eq!(
        plan.schedule.next_after(ts("2026-12-24T17:50:00Z")),
        Some(fire("2026-12-24T18:00:00Z", 1))
    );
    // The spring-forward night: 02:30 does not exist in Berlin on 29 March; the run is at 03:00.
    let cron_only = &triggers[0];
    assert_eq!(
        cron_only.next_after(ts("2026-03-28T12:00:00Z")),
        Some(ts("2026-03-29T01:00:00Z"))
    );

    // Written back and read again, it is the same job.
    let round_trip = JobSpec::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(round_trip, spec);
}

fn example_with(edit: impl FnOnce(&mut Value)) -> JobSpec {
    let mut value: Value = serde_json::from_str(EXAMPLE).unwrap();
    edit(&mut value);
    JobSpec::from_value(value).unwrap()
}

fn fields(errors: &ValidationErrors) -> Vec<&str> {
    let mut fields: Vec<&str> = errors.errors.iter().map(|e| e.field.as_str()).collect();
    fields.sort_unstable();
    fields
}

#[test]
fn one_response_lists_every_problem_with_its_field_path() {
    let spec = example_with(|job| {
        job["name"] = json!("Backup DB");
        job["triggers"] = json!([
            {"cron": "61 * * * *", "timezone": "Mars/Olympus"},
            {"interval": "50ms"},
            {"cron": "@daily", "interval": "1h"},
            {"at": "tomorrow", "jitter": "soon"},
            {"interval": "1h", "timezone": "UTC", "start_at": "2026-02-01T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"},
            {"cron": "0 0 30 2 *"},
            {},
        ]);
        job["task"]["argv"] = json!([]);
        job["task"]["bogus"] = json!(true);
        job["task"]["secret_files"] = json!({"A=B": "/run/x"});
        job["timeout"] = json!("forever");
        job["retry"] = json!({
            "max_attempts": 0,
            "backoff": {"initial": "soon", "max": "5s", "multiplier": 0.5, "jitter": 2.0},
            "on": ["exit:1", "exit:300"],
        });
        job["expected_exit_codes"] = json!([0, 256]);
        job["max_concurrent"] = json!(2);
        job["catchup_window"] = json!("-1h");
    });
    let errors = spec.validate().unwrap_err();
    assert_eq!(
        fields(&errors),
        [
            "catchup_window",
            "expected_exit_codes[1]",
            "max_concurrent",
            "name",
            "retry.backoff.initial",
            "retry.backoff.jitter",
            "retry.backoff.multiplier",
            "retry.max_attempts",
            "retry.on[1]",
            "task.argv",
            "task.bogus",
            "task.secret_files.A=B",
            "timeout",
            "triggers[0].cron",
            "triggers[0].timezone",
            "triggers[1].interval",
            "triggers[2]",
            "triggers[3].at",
            "triggers[3].jitter",
            "triggers[4].end_at",
            "triggers[4].timezone",
            "triggers[5].cron",
            "triggers[6]",
        ],
        "{errors}"
    );
    let message = |field: &str| {
        errors
            .errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
            .unwrap()
    };
    assert!(message("triggers[0].cron").contains("minute field `61`"));
    assert!(message("triggers[0].timezone").contains("Mars/Olympus"));
    assert!(message("triggers[5].cron").contains("never fires"));
    assert!(message("task.bogus").contains("unknown field"));
    assert!(message("task.argv").contains("argv[0]"));
    // Display names every problem with its field.
    let shown = errors.to_string();
    assert!(
        errors
            .errors
            .iter()
            .all(|e| shown.contains(&format!("{}: {}", e.field, e.message)))
    );
}

#[test]
fn single_problems_are_reported_where_they_are() {
    let cases: Vec<(JobSpec, &str)> = vec![
        (
            example_with(|j| j["triggers"][0]["timezone"] = json!("Europe/Berlinn")),
            "triggers[0].timezone",
        ),
        (
            example_with(|j| j["triggers"][0]["cron"] = json!("0 30 2 * * * *")),
            "triggers[0].cron",
        ),
        (
            example_with(|j| j["triggers"][0]["cron"] = json!("0 MON * * *")),
            "triggers[0].cron",
        ),
        (
            example_with(|j| j["triggers"][1]["start_at"] = json!("2026-01-01")),
            "triggers[1].start_at",
        ),
        (
            example_with(|j| j["retry"]["backoff"]["max"] = json!("5s")),
            "retry.backoff.max",
        ),
        (
            example_with(|j| j["retry"]["backoff"]["initial"] = json!("1h")),
            "retry.backoff.max",
        ),
        (
            example_with(|j| j["task"]["argv"] = json!([""])),
            "task.argv",
        ),
        (
            example_with(|j| j["task"]["env"] = json!({"A=B": "x"})),
            "task.env.A=B",
        ),
        (
            example_with(|j| j["task"]["env_files"] = json!([""])),
            "task.env_files[0]",
        ),
        (example_with(|j| j["task"]["cwd"] = json!("")), "task.cwd"),
        (
            example_with(|j| j["kill_grace"] = json!("0s")),
            "kill_grace",
        ),
        (
            example_with(|j| j["expected_exit_codes"] = json!([])),
            "expected_exit_codes",
        ),
        (
            example_with(|j| j["namespace"] = json!("-bad")),
            "namespace",
        ),
        (
            example_with(|j| j["description"] = json!("x".repeat(5000))),
            "description",
        ),
        (
            example_with(|j| j["hooks"]["pre"] = json!({"kind": "command", "argv": []})),
            "hooks.pre.argv",
        ),
        (
            example_with(|j| j["hooks"]["post"] = json!({"kind": "shell", "script": " "})),
            "hooks.post.script",
        ),
        (
            example_with(|j| {
                j["task"] = json!({"kind": "http", "method": "FETCH", "url": "https://example.com"})
            }),
            "task.method",
        ),
        (
            example_with(|j| j["task"] = json!({"kind": "http", "url": "ftp://example.com"})),
            "task.url",
        ),
    ];
    for (spec, field) in cases {
        let errors = spec.validate().unwrap_err();
        assert_eq!(fields(&errors), [field], "{errors}");
    }
}

#[test]
fn type_errors_name_their_field() {
    let err =
        JobSpec::from_json(&EXAMPLE.replace(r#""max_attempts":3"#, r#""max_attempts":"three""#))
            .unwrap_err();
    assert_eq!(fields(&err), ["retry.max_attempts"]);
    let err =
        JobSpec::from_json(&EXAMPLE.replace(r#""overlap":"forbid""#, r#""overlap":"sometimes""#))
            .unwrap_err();
    assert_eq!(fields(&err), ["overlap"]);
    let err = JobSpec::from_json(
        &EXAMPLE.replace(r#""jitter":"30s""#, r#""jitter":"30s","color":"red""#),
    )
    .unwrap_err();
    assert!(err.to_string().contains("color"), "{err}");
    assert!(JobSpec::from_json("{").is_err());
}

#[test]
fn a_job_without_triggers_is_valid() {
    let spec = example_with(|j| j["triggers"] = json!([]));
    let plan = spec.validate().unwrap();
    assert!(plan.schedule.triggers.is_empty());
    assert_eq!(plan.schedule.next_after(ts("2026-01-01T00:00:00Z")), None);
}

#[test]
fn type_errors_and_validation_errors_come_in_one_report() {
    let errs = JobSpec::from_json(
        r#"{"name":"BAD","max_concurrent":"x","timeout":"abc","colour":1,
            "task":{"kind":"shell","script":"true"},"triggers":[{"cron":"61 * * * *"}]}"#,
    )
    .unwrap_err();
    let fields: Vec<&str> = errs.errors.iter().map(|e| e.field.as_str()).collect();
    for expected in ["max_concurrent", "name", "timeout", "triggers[0].cron"] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {fields:?}"
        );
    }
    assert!(
        errs.errors.iter().any(|e| e.message.contains("colour")),
        "{errs:?}"
    );
    assert!(
        !fields
            .iter()
            .any(|f| f.contains("max_concurrent") && f != &"max_concurrent")
    );
}

/// The message of the one problem reported for `field`.
fn message_for(errors: &ValidationErrors, field: &str) -> String {
    assert_eq!(fields(errors), [field], "{errors}");
    errors.errors[0].message.clone()
}

#[test]
fn durations_jitter_and_expressions_are_bounded() {
    // A jitter that wrapped around gave run_at values in 1855 and 2317.
    let spec = example_with(|j| {
        j["triggers"] = json!([{"interval": "1s", "jitter": "999999999999999h"}]);
    });
    let m = message_for(&spec.validate().unwrap_err(), "triggers[0].jitter");
    assert!(m.contains("at most 8784h"), "{m}");
    let spec = example_with(|j| j["triggers"] = json!([{"cron": "@daily", "jitter": "25h"}]));
    let m = message_for(&spec.validate().unwrap_err(), "triggers[0].jitter");
    assert!(m.contains("at most 24h"), "{m}");
    let spec = example_with(|j| j["triggers"] = json!([{"interval": "1s", "jitter": "1h"}]));
    let m = message_for(&spec.validate().unwrap_err(), "triggers[0].jitter");
    assert!(m.contains("shorter than the interval (1s)"), "{m}");
    let spec = example_with(|j| j["triggers"] = json!([{"interval": "10m", "jitter": "30s"}]));
    assert!(spec.validate().is_ok());
    for (field, value) in [
        ("timeout", "9000h"),
        ("catchup_window", "8785h"),
        ("kill_grace", "2h"),
    ] {
        let spec = example_with(|j| j[field] = json!(value));
        message_for(&spec.validate().unwrap_err(), field);
    }
    let spec = example_with(|j| j["triggers"] = json!([{"interval": "9999h"}]));
    message_for(&spec.validate().unwrap_err(), "triggers[0].interval");

    // A 100 000-character cron broke `kairos job ls` for everyone.
    let spec = example_with(|j| j["triggers"] = json!([{"cron": "5".repeat(100_000)}]));
    let m = message_for(&spec.validate().unwrap_err(), "triggers[0].cron");
    assert!(m.contains("100000 characters long; at most 1024"), "{m}");
    let spec = example_with(|j| {
        j["triggers"] = json!([{"cron": "@daily", "timezone": "Z".repeat(1000)}]);
    });
    message_for(&spec.validate().unwrap_err(), "triggers[0].timezone");
    let spec = example_with(|j| {
        j["task"] = json!({"kind": "http", "url": format!("https://x/{}", "a".repeat(10_000))});
    });
    let m = message_for(&spec.validate().unwrap_err(), "task.url");
    assert!(
        !m.contains("aaaa"),
        "the message does not repeat the value: {m}"
    );
}

#[test]
fn an_instant_beyond_the_range_says_so() {
    let spec = example_with(|j| j["triggers"] = json!([{"at": "9999-12-31T23:59:59Z"}]));
    let m = message_for(&spec.validate().unwrap_err(), "triggers[0].at");
    assert!(m.contains("out of range"), "{m}");
    let spec = example_with(|j| j["triggers"] = json!([{"at": "tomorrow"}]));
    let m = message_for(&spec.validate().unwrap_err(), "triggers[0].at");
    assert!(m.contains("not an RFC 3339 instant"), "{m}");
    let spec = example_with(|j| j["triggers"] = json!([{"at": "9999-12-30T00:00:00Z"}]));
    assert!(spec.validate().is_ok());
}

/// Every problem of a document, as `(field, message)`.
fn problems(doc: &str) -> Vec<(String, String)> {
    // A document whose fields all have their types parses; its problems are then validation's.
    let errs = match JobSpec::from_json(doc) {
        Ok(spec) => spec.validate().unwrap_err(),
        Err(errs) => errs,
    };
    let mut out: Vec<(String, String)> = errs
        .errors
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect();
    out.sort();
    out
}

fn problem_fields(doc: &str) -> Vec<String> {
    problems(doc).into_iter().map(|(f, _)| f).collect()
}

#[test]
fn an_unknown_or_missing_task_hides_no_other_problem() {
    let bad_rest = r#""name":"Bad Name","triggers":[{"cron":"61 * * * *"}]"#;
    assert_eq!(
        problem_fields(&format!(
            r#"{{{bad_rest},"task":{{"kind":"bogus","x":1}}}}"#
        )),
        ["name", "task.kind", "triggers[0].cron"]
    );
    assert_eq!(
        problem_fields(&format!("{{{bad_rest}}}")),
        ["name", "task", "triggers[0].cron"],
        "a missing task has its own path, not the empty one"
    );
    assert_eq!(
        problem_fields(&format!(r#"{{{bad_rest},"task":{{"script":"x"}}}}"#)),
        ["name", "task.kind", "triggers[0].cron"]
    );
    assert_eq!(
        problem_fields(&format!(r#"{{{bad_rest},"task":{{"kind":"shell"}}}}"#)),
        ["name", "task.script", "triggers[0].cron"]
    );
    assert_eq!(
        problem_fields(
            r#"{"task":{"kind":"shell","script":"x"},"triggers":[{"cron":"61 * * * *"}]}"#
        ),
        ["name", "triggers[0].cron"]
    );
}

#[test]
fn type_errors_inside_tasks_hooks_and_lists_have_their_paths() {
    assert_eq!(
        problem_fields(
            r#"{"name":"ok","triggers":[{"cron":5},"x",{"interval":3}],
                "task":{"kind":"command","argv":"x","env":{"A":1},"cwd":7}}"#
        ),
        [
            "task.argv",
            "task.cwd",
            "task.env.A",
            "triggers[0].cron",
            "triggers[1]",
            "triggers[2].interval"
        ]
    );
    assert_eq!(
        problem_fields(
            r#"{"name":"ok","task":{"kind":"command","argv":["a",5]},
                "expected_exit_codes":[0,"x",300],"labels":{"a":5},
                "hooks":{"pre":{"kind":"nope"},"post":{"kind":"shell","script":1,"x":2}}}"#
        ),
        [
            "expected_exit_codes[1]",
            "expected_exit_codes[2]",
            "hooks.post.script",
            "hooks.post.x",
            "hooks.pre.kind",
            "labels.a",
            "task.argv[1]"
        ]
    );
    assert_eq!(
        problem_fields(r#"{"name":"ok","task":{"kind":"http","url":5,"method":3,"bogus":1}}"#),
        ["task.bogus", "task.method", "task.url"]
    );
}

#[test]
fn a_key_given_twice_is_an_error_at_its_path() {
    let found = problems(r#"{"name":"a","name":"b","task":{"kind":"shell","script":"x"}}"#);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "name");
    assert!(found[0].1.contains("given twice"), "{found:?}");
    assert_eq!(
        problem_fields(
            r#"{"name":"a","task":{"kind":"shell","script":"x","env":{"K":"1","K":"2"}}}"#
        ),
        ["task.env.K"]
    );
}

#[test]
fn event_triggers_subscribe_to_a_topic_with_an_optional_filter() {
    let doc = r#"{"name":"on-signup","triggers":[
        {"event":"user.signup","filter":{"plan":"pro","seats":3}},
        {"event":"user.signup"},
        {"cron":"0 3 * * *"}],
        "task":{"kind":"shell","script":"true"}}"#;
    let spec = JobSpec::from_json(doc).unwrap();
    let plan = spec.validate().unwrap();
    assert_eq!(kairos_core::event::topics(&spec), ["user.signup"]);
    assert!(plan.schedule.is_timed());
    let now = ts("2026-03-01T00:00:00Z");
    assert!(
        plan.schedule
            .subscribes("user.signup", &json!({"plan": "free"}), now),
        "the trigger without a filter takes every event of the topic"
    );
    assert!(!plan.schedule.subscribes("user.login", &json!({}), now));
    // Only the cron trigger yields due times.
    let next = plan.schedule.next_after(now).unwrap();
    assert_eq!(next.trigger, 2);

    let filtered = JobSpec::from_json(
        r#"{"name":"pro","triggers":[{"event":"user.signup","filter":{"plan":"pro"},
            "start_at":"2026-03-01T00:00:00Z","end_at":"2026-04-01T00:00:00Z"}],
            "task":{"kind":"shell","script":"true"}}"#,
    )
    .unwrap()
    .validate()
    .unwrap();
    let pro = json!({"plan": "pro", "user": "ann"});
    assert!(filtered.schedule.subscribes("user.signup", &pro, now));
    assert!(
        !filtered
            .schedule
            .subscribes("user.signup", &json!({"plan": "free"}), now)
    );
    assert!(!filtered.schedule.is_timed());
    assert_eq!(filtered.schedule.next_after(now), None);
    let after = ts("2026-04-02T00:00:00Z");
    assert!(
        !filtered.schedule.subscribes("user.signup", &pro, after),
        "outside the trigger's bounds"
    );
}

#[test]
fn bad_event_triggers_are_refused_at_their_fields() {
    assert_eq!(
        problem_fields(
            r#"{"name":"x","triggers":[
                {"event":"bad topic"},
                {"event":"ok","filter":{"a":[1],"b":{"c":1}}},
                {"cron":"@daily","filter":{"a":1}},
                {"event":"ok","jitter":"5s"},
                {"event":"ok","cron":"@daily"}],
                "task":{"kind":"shell","script":"true"}}"#
        ),
        [
            "triggers[0].event",
            "triggers[1].filter.a",
            "triggers[1].filter.b",
            "triggers[2].filter",
            "triggers[3].jitter",
            "triggers[4]",
        ]
    );
}

#[test]
fn after_triggers_name_a_job_and_which_ends_count() {
    let spec = JobSpec::from_json(
        r#"{"name":"load","triggers":[{"after":{"job":"extract"}},
            {"after":{"job":"extract","on":"done"}},{"after":{"job":"audit","on":"failure"}}],
            "task":{"kind":"shell","script":"true"}}"#,
    )
    .unwrap();
    let plan = spec.validate().unwrap();
    assert!(!plan.schedule.is_timed());
    assert_eq!(
        kairos_core::dependency::upstreams(&spec),
        ["audit", "extract"]
    );
    let states: Vec<(String, &str)> = kairos_core::dependency::upstream_states(&spec)
        .into_iter()
        .map(|(job, s)| (job, s.as_str()))
        .collect();
    assert!(
        states.contains(&("extract".into(), "cancelled")),
        "{states:?}"
    );
    assert!(states.contains(&("audit".into(), "lost")), "{states:?}");
    assert!(
        !states.contains(&("audit".into(), "succeeded")),
        "{states:?}"
    );
    assert_eq!(
        problem_fields(
            r#"{"name":"x","triggers":[
                {"after":{"job":"Bad Name"}},
                {"after":{"job":"a"},"start_at":"2026-01-01T00:00:00Z","jitter":"1s"},
                {"after":{"job":"a"},"cron":"@daily"}],
                "task":{"kind":"shell","script":"true"}}"#
        ),
        [
            "triggers[0].after.job",
            "triggers[1].jitter",
            "triggers[1].start_at",
            "triggers[2]",
        ]
    );
}

#[test]
fn triggers_are_described_in_words() {
    let spec = JobSpec::from_json(EXAMPLE).unwrap();
    let words: Vec<String> = spec.triggers.iter().map(|t| t.describe()).collect();
    assert_eq!(
        words,
        [
            "At 02:30 (Europe/Berlin), jitter up to 30s",
            "every 15m, from 2026-01-01T00:00:00Z",
            "once at 2026-12-24T18:00:00Z",
        ]
    );
    let more = JobSpec::from_json(
        r#"{"name":"x","triggers":[{"cron":"*/5 * * * *","exclude":["holidays"]},{"event":"orders","filter":{"kind":"new"}},{"after":{"job":"extract","on":"failure"}}],"task":{"kind":"shell","script":"true"}}"#,
    )
    .unwrap();
    let words: Vec<String> = more.triggers.iter().map(|t| t.describe()).collect();
    assert_eq!(
        words,
        [
            "At every 5 minutes (UTC), except holidays",
            "on event `orders` matching 1 field(s)",
            "after `extract` fails",
        ]
    );
}
