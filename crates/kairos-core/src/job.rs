//! Validation: a [`JobSpec`] becomes a [`JobPlan`], the typed form the scheduler and workers use.
//! Every problem is reported at once, each with its field path; nothing is written on error.

use jiff::{SignedDuration, Timestamp};

use crate::duration::parse_duration;
use crate::error::{ValidationErrors, index, path};
use crate::policy::{RetryOn, RetryPolicy};
use crate::spec::*;
use crate::trigger::{CronSchedule, Schedule, Trigger, TriggerKind};

/// Default `kill_grace`.
pub const DEFAULT_KILL_GRACE: SignedDuration = SignedDuration::from_secs(10);
/// Default `catchup_window`.
pub const DEFAULT_CATCHUP_WINDOW: SignedDuration = SignedDuration::from_secs(3600);
/// Largest `max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Most triggers per job.
pub const MAX_TRIGGERS: usize = 64;
/// Largest `jitter` of a trigger.
pub const MAX_JITTER: SignedDuration = SignedDuration::from_hours(24);
/// Largest `kill_grace`.
pub const MAX_KILL_GRACE: SignedDuration = SignedDuration::from_hours(1);
/// Most calendars in a trigger's `exclude` (and in its `only`).
pub const MAX_TRIGGER_CALENDARS: usize = 16;
/// Longest time zone name.
pub const MAX_TIMEZONE_LEN: usize = 64;
/// Longest HTTP task URL.
pub const MAX_URL_LEN: usize = 8192;
/// Bounds of `limits.memory`, in bytes.
pub const MIN_MEMORY_LIMIT: u64 = 1 << 20;
pub const MAX_MEMORY_LIMIT: u64 = 16 << 40;
/// Largest `limits.open_files`.
pub const MAX_OPEN_FILES_LIMIT: u64 = 1 << 20;
/// Largest `limits.processes`.
pub const MAX_PROCESSES_LIMIT: u64 = 1_000_000;

/// The validated, typed form of a job.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub schedule: Schedule,
    pub timeout: Option<SignedDuration>,
    pub kill_grace: SignedDuration,
    pub retry: RetryPolicy,
    pub overlap: OverlapPolicy,
    pub max_concurrent: u32,
    pub catchup: CatchupPolicy,
    pub catchup_window: SignedDuration,
    pub execution: ExecutionMode,
    /// `Some` for a workflow (`steps`), `None` for a job with one `task`.
    pub workflow: Option<crate::workflow::Workflow>,
    /// The job's alert rules (`notify`).
    pub alerts: Vec<crate::alert::AlertRule>,
}

impl JobPlan {
    /// The calendars the job's triggers name, sorted, each once.
    pub fn calendar_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .schedule
            .triggers
            .iter()
            .flat_map(|t| {
                t.calendars
                    .names
                    .exclude
                    .iter()
                    .chain(&t.calendars.names.only)
            })
            .cloned()
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Fills in the calendars the triggers name, from `lookup` (the calendars of the job's
    /// namespace); every name it does not know is an error at its field path
    /// (`triggers[i].exclude[j]`), and the plan is left as it was.
    pub fn resolve_calendars(
        &mut self,
        lookup: impl Fn(&str) -> Option<std::sync::Arc<crate::calendar::Calendar>>,
    ) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        let mut resolved = Vec::with_capacity(self.schedule.triggers.len());
        for (i, t) in self.schedule.triggers.iter().enumerate() {
            let names = &t.calendars.names;
            let mut find = |field: &str, list: &[String]| {
                let mut out = Vec::with_capacity(list.len());
                for (j, name) in list.iter().enumerate() {
                    match lookup(name) {
                        Some(c) => out.push(c),
                        None => errs.push(
                            index(&path(&index("triggers", i), field), j),
                            format!(
                                "no calendar `{name}` in the job's namespace (or it no longer validates); create it first (`kairos calendar apply`, `PUT /api/v1/calendars/{name}`)"
                            ),
                        ),
                    }
                }
                out
            };
            let exclude = find("exclude", &names.exclude);
            let only = find("only", &names.only);
            resolved.push((exclude, only));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        for (t, (exclude, only)) in self.schedule.triggers.iter_mut().zip(resolved) {
            t.calendars.exclude = exclude;
            t.calendars.only = only;
        }
        Ok(())
    }
}

/// Checks a name against `^[a-z0-9][a-z0-9_.-]{0,62}$`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: 1 to 63 characters, lowercase letters, digits, `_`, `.`, `-`, starting with a letter or digit"
        ))
    }
}

/// Parses an RFC 3339 instant; one that is well formed but beyond what Kairos can represent is
/// out of range, not malformed.
pub fn parse_instant(s: &str) -> Result<Timestamp, String> {
    if s.len() > 64 {
        return Err(format!(
            "is {} characters long; not an RFC 3339 instant such as `2026-01-01T00:00:00Z`",
            s.len()
        ));
    }
    s.parse::<Timestamp>()
        .map_err(|_| match jiff::fmt::temporal::Pieces::parse(s) {
            Ok(pieces) if pieces.offset().is_some() && pieces.time().is_some() => format!(
                "`{s}` is out of range: instants must be between {} and {}",
                Timestamp::MIN,
                Timestamp::MAX
            ),
            _ => format!("`{s}` is not an RFC 3339 instant such as `2026-01-01T00:00:00Z`"),
        })
}

impl JobSpec {
    /// Validates every field and returns the typed plan, or every problem with its field path.
    pub fn validate(&self) -> Result<JobPlan, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if let Err(e) = validate_name(&self.name) {
            errs.push("name", e);
        }
        if let Err(e) = validate_name(&self.namespace) {
            errs.push("namespace", e);
        }
        if self.triggers.len() > MAX_TRIGGERS {
            errs.push(
                "triggers",
                format!("at most {MAX_TRIGGERS} triggers per job"),
            );
        }
        let mut triggers = Vec::with_capacity(self.triggers.len());
        for (i, t) in self.triggers.iter().enumerate() {
            if let Some(t) = validate_trigger(t, &index("triggers", i), &mut errs) {
                triggers.push(t);
            }
        }
        let workflow = match (&self.task, self.steps.is_empty()) {
            (Some(task), true) => {
                validate_task(task, "task", &mut errs);
                if self.max_concurrent_steps.is_some() {
                    errs.push(
                        "max_concurrent_steps",
                        "only applies to a workflow (`steps`)",
                    );
                }
                None
            }
            (None, false) => {
                let max = self
                    .max_concurrent_steps
                    .unwrap_or(crate::workflow::DEFAULT_MAX_CONCURRENT_STEPS);
                if max == 0 || max as usize > crate::workflow::MAX_STEPS {
                    errs.push(
                        "max_concurrent_steps",
                        format!("must be between 1 and {}", crate::workflow::MAX_STEPS),
                    );
                }
                crate::workflow::validate_steps(&self.steps, "steps", &mut errs).map(|dag| {
                    crate::workflow::Workflow {
                        dag,
                        max_concurrent_steps: max,
                    }
                })
            }
            (Some(_), false) => {
                errs.push("steps", "set exactly one of `task` and `steps`");
                None
            }
            (None, true) => {
                errs.push("task", "set exactly one of `task` and `steps`");
                None
            }
        };

        let mut duration =
            |field: &str, value: &Option<String>, default: Option<SignedDuration>| match value {
                None => default,
                Some(v) => match parse_duration(v, false) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        errs.push(field, e);
                        default
                    }
                },
            };
        let timeout = duration("timeout", &self.timeout, None);
        let kill_grace = duration("kill_grace", &self.kill_grace, Some(DEFAULT_KILL_GRACE))
            .unwrap_or(DEFAULT_KILL_GRACE);
        let catchup_window = duration(
            "catchup_window",
            &self.catchup_window,
            Some(DEFAULT_CATCHUP_WINDOW),
        )
        .unwrap_or(DEFAULT_CATCHUP_WINDOW);
        if kill_grace > MAX_KILL_GRACE {
            errs.push("kill_grace", "must be at most 1h");
        }

        let retry = match &self.retry {
            None => RetryPolicy::none(),
            Some(r) => validate_retry(r, "retry", &mut errs),
        };
        if self.expected_exit_codes.is_empty() {
            errs.push("expected_exit_codes", "must list at least one exit code");
        }
        for (i, code) in self.expected_exit_codes.iter().enumerate() {
            if !(0..=255).contains(code) {
                errs.push(
                    index("expected_exit_codes", i),
                    format!("{code} is not an exit code (0 to 255)"),
                );
            }
        }
        if self.max_concurrent == 0 || self.max_concurrent > 10_000 {
            errs.push("max_concurrent", "must be between 1 and 10000");
        }
        if self.overlap != OverlapPolicy::Allow && self.max_concurrent != 1 {
            errs.push(
                "max_concurrent",
                "only applies with `overlap: allow`; leave it at 1",
            );
        }
        if let Some(pre) = &self.hooks.pre {
            validate_hook(pre, "hooks.pre", &mut errs);
        }
        if let Some(post) = &self.hooks.post {
            validate_hook(post, "hooks.post", &mut errs);
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 63 {
                errs.push(format!("labels.{k}"), "label keys are 1 to 63 characters");
            }
            if v.len() > 1024 {
                errs.push(
                    format!("labels.{k}"),
                    "label values are at most 1024 characters",
                );
            }
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 4096) {
            errs.push("description", "at most 4096 characters");
        }
        let alerts = crate::alert::validate_rules(&self.notify, "notify", &mut errs);
        errs.into_result(JobPlan {
            schedule: Schedule { triggers },
            timeout,
            kill_grace,
            retry,
            overlap: self.overlap,
            max_concurrent: self.max_concurrent,
            catchup: self.catchup,
            catchup_window,
            execution: self.execution,
            workflow,
            alerts,
        })
    }
}

fn validate_trigger(t: &TriggerSpec, at: &str, errs: &mut ValidationErrors) -> Option<Trigger> {
    let before = errs.errors.len();
    let set = [
        t.cron.is_some(),
        t.interval.is_some(),
        t.at.is_some(),
        t.event.is_some(),
        t.after.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        errs.push(
            at,
            "set exactly one of `cron`, `interval`, `at`, `event` or `after`",
        );
    }
    if t.filter.is_some() && t.event.is_none() {
        errs.push(path(at, "filter"), "only applies to `event` triggers");
    }
    if t.after.is_some() {
        for (field, given) in [
            ("start_at", t.start_at.is_some()),
            ("end_at", t.end_at.is_some()),
        ] {
            if given {
                errs.push(
                    path(at, field),
                    "does not apply to `after` (a dependent job runs after each matching run)",
                );
            }
        }
    }
    let mut names = crate::calendar::CalendarNames::default();
    for (field, list, out) in [
        ("exclude", &t.exclude, &mut names.exclude),
        ("only", &t.only, &mut names.only),
    ] {
        if list.is_empty() {
            continue;
        }
        let at = path(at, field);
        if t.after.is_some() {
            errs.push(
                &at,
                "does not apply to `after` (a dependent job runs after each matching run)",
            );
            continue;
        }
        if list.len() > MAX_TRIGGER_CALENDARS {
            errs.push(&at, format!("at most {MAX_TRIGGER_CALENDARS} calendars"));
            continue;
        }
        for (j, name) in list.iter().enumerate() {
            if let Err(e) = validate_name(name) {
                errs.push(index(&at, j), e);
            } else if list[..j].contains(name) {
                errs.push(index(&at, j), format!("`{name}` is listed twice"));
            } else {
                out.push(name.clone());
            }
        }
    }
    if t.jitter.is_some() && (t.event.is_some() || t.after.is_some()) {
        errs.push(
            path(at, "jitter"),
            "only applies to time triggers (`cron`, `interval`, `at`)",
        );
    }
    if t.timezone.is_some() && t.cron.is_none() {
        errs.push(path(at, "timezone"), "only applies to `cron` triggers");
    }
    let mut instant = |field: &str, v: &Option<String>| -> Option<Timestamp> {
        let v = v.as_ref()?;
        parse_instant(v)
            .map_err(|e| errs.push(path(at, field), e))
            .ok()
    };
    let start_at = instant("start_at", &t.start_at);
    let end_at = instant("end_at", &t.end_at);
    let at_instant = instant("at", &t.at);
    if let (Some(s), Some(e)) = (start_at, end_at)
        && e <= s
    {
        errs.push(path(at, "end_at"), "must be after `start_at`");
    }
    let jitter = match &t.jitter {
        None => None,
        Some(j) => match parse_duration(j, true) {
            Ok(d) if d > MAX_JITTER => {
                errs.push(path(at, "jitter"), "must be at most 24h");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(path(at, "jitter"), e);
                None
            }
        },
    };
    if let Some(zone) = &t.timezone
        && zone.len() > MAX_TIMEZONE_LEN
    {
        errs.push(
            path(at, "timezone"),
            format!(
                "is {} characters long; at most {MAX_TIMEZONE_LEN}",
                zone.len()
            ),
        );
        return None;
    }
    let kind = if let Some(expr) = &t.cron {
        match CronSchedule::parse(expr, t.timezone.as_deref()) {
            Ok(c) => Some(TriggerKind::Cron(c)),
            Err(crate::trigger::CronScheduleError::TimeZone(z)) => {
                errs.push(
                    path(at, "timezone"),
                    format!(
                        "unknown time zone `{z}`; use an IANA name such as `Europe/Berlin` or `UTC`"
                    ),
                );
                None
            }
            Err(e) => {
                errs.push(path(at, "cron"), e.to_string());
                // The expression is checked before the zone: report a bad zone as well.
                if let Some(z) = &t.timezone
                    && jiff::tz::TimeZone::get(z).is_err()
                {
                    let e = crate::trigger::CronScheduleError::TimeZone(z.clone());
                    errs.push(path(at, "timezone"), e.to_string());
                }
                None
            }
        }
    } else if let Some(every) = &t.interval {
        match parse_duration(every, false) {
            Ok(d) if d < SignedDuration::from_millis(100) => {
                errs.push(path(at, "interval"), "must be at least 100ms");
                None
            }
            Ok(d) if jitter.is_some_and(|j| j >= d) => {
                errs.push(
                    path(at, "jitter"),
                    format!("must be shorter than the interval ({every})"),
                );
                None
            }
            Ok(d) => Some(TriggerKind::Interval { every: d }),
            Err(e) => {
                errs.push(path(at, "interval"), e);
                None
            }
        }
    } else if let Some(topic) = &t.event {
        if let Err(e) = crate::event::validate_topic(topic) {
            errs.push(path(at, "event"), e);
        }
        let filter = t.filter.clone().unwrap_or_default();
        crate::event::validate_filter(&filter, &path(at, "filter"), errs);
        Some(TriggerKind::Event(crate::event::EventTrigger {
            topic: topic.clone(),
            filter,
        }))
    } else if let Some(after) = &t.after {
        if let Err(e) = validate_name(&after.job) {
            errs.push(path(&path(at, "after"), "job"), e);
        }
        Some(TriggerKind::After(crate::dependency::AfterTrigger {
            job: after.job.clone(),
            on: after.on,
        }))
    } else {
        at_instant.map(TriggerKind::At)
    };
    if errs.errors.len() > before {
        return None;
    }
    Some(Trigger {
        kind: kind?,
        start_at,
        end_at,
        jitter,
        calendars: crate::calendar::CalendarFilter {
            names,
            ..Default::default()
        },
    })
}

fn validate_process(
    p: &ProcessSettings,
    unknown: &std::collections::BTreeMap<String, serde_json::Value>,
    at: &str,
    errs: &mut ValidationErrors,
) {
    for key in unknown.keys() {
        errs.push(path(at, key), "unknown field");
    }
    if p.cwd.as_ref().is_some_and(|c| c.is_empty()) {
        errs.push(path(at, "cwd"), "must not be empty");
    }
    let names = p
        .env
        .keys()
        .map(|k| ("env", k))
        .chain(p.secret_files.keys().map(|k| ("secret_files", k)));
    for (map, k) in names {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            errs.push(
                path(at, &format!("{map}.{k}")),
                "variable names are non-empty and contain no `=`",
            );
        }
    }
    for (k, v) in &p.env {
        if v.contains('\0') {
            errs.push(path(at, &format!("env.{k}")), "values must not contain NUL");
        }
    }
    for (i, f) in p.env_files.iter().enumerate() {
        if f.is_empty() {
            errs.push(index(&path(at, "env_files"), i), "must not be empty");
        }
    }
    for (k, f) in &p.secret_files {
        if f.is_empty() {
            errs.push(path(at, &format!("secret_files.{k}")), "must name a file");
        }
    }
    if let Some(run_as) = &p.run_as {
        let at = path(at, "run_as");
        if let Err(e) = validate_account(&run_as.user) {
            errs.push(path(&at, "user"), e);
        }
        if let Some(Err(e)) = run_as.group.as_deref().map(validate_account) {
            errs.push(path(&at, "group"), e);
        }
    }
    let at = path(at, "limits");
    let limits = &p.limits;
    if let Some(memory) = &limits.memory {
        match crate::size::parse_size(memory) {
            Ok(bytes) if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&bytes) => {
                errs.push(path(&at, "memory"), "must be between 1MiB and 16TiB");
            }
            Ok(_) => {}
            Err(e) => errs.push(path(&at, "memory"), e),
        }
    }
    if let Some(cpu) = &limits.cpu_time {
        match parse_duration(cpu, false) {
            Ok(d) if d < SignedDuration::from_secs(1) => {
                errs.push(path(&at, "cpu_time"), "must be at least 1s");
            }
            Ok(_) => {}
            Err(e) => errs.push(path(&at, "cpu_time"), e),
        }
    }
    // At least stdin, stdout and stderr.
    if limits
        .open_files
        .is_some_and(|n| !(3..=MAX_OPEN_FILES_LIMIT).contains(&n))
    {
        errs.push(path(&at, "open_files"), "must be between 3 and 1048576");
    }
    if limits
        .processes
        .is_some_and(|n| !(1..=MAX_PROCESSES_LIMIT).contains(&n))
    {
        errs.push(path(&at, "processes"), "must be between 1 and 1000000");
    }
}

/// A user or group for `run_as`: a numeric id, or a name of 1 to 32 characters (letters,
/// digits, `_`, `-`, `.`, not starting with `-`).
fn validate_account(name: &str) -> Result<(), String> {
    let numeric = !name.is_empty() && name.len() <= 10 && name.bytes().all(|b| b.is_ascii_digit());
    let named = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    // `4294967295` is `(uid_t) -1`, which `setresuid` reads as "leave unchanged": a task would
    // keep the server's (root) identity.
    let id_ok = name.parse::<u32>().is_ok_and(|id| id != u32::MAX);
    if numeric && id_ok || !numeric && named {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a user or group name or id (0 to 4294967294)"
        ))
    }
}

fn validate_command(c: &CommandTask, at: &str, errs: &mut ValidationErrors) {
    if c.argv.is_empty() || c.argv[0].is_empty() {
        errs.push(
            path(at, "argv"),
            "must name a program: `argv[0]` is required",
        );
    }
    if c.argv.iter().any(|a| a.contains('\0')) {
        errs.push(path(at, "argv"), "arguments must not contain NUL");
    }
    validate_process(&c.process, &c.unknown, at, errs);
}

fn validate_shell(s: &ShellTask, at: &str, errs: &mut ValidationErrors) {
    if s.script.trim().is_empty() {
        errs.push(path(at, "script"), "must not be empty");
    }
    if s.script.contains('\0') {
        errs.push(path(at, "script"), "must not contain NUL");
    }
    validate_process(&s.process, &s.unknown, at, errs);
}

pub(crate) fn validate_hook(h: &HookSpec, at: &str, errs: &mut ValidationErrors) {
    match h {
        HookSpec::Command(c) => validate_command(c, at, errs),
        HookSpec::Shell(s) => validate_shell(s, at, errs),
    }
}

const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

pub(crate) fn validate_task(task: &TaskSpec, at: &str, errs: &mut ValidationErrors) {
    match task {
        TaskSpec::Command(c) => validate_command(c, at, errs),
        TaskSpec::Shell(s) => validate_shell(s, at, errs),
        TaskSpec::Http(h) => {
            if !HTTP_METHODS.contains(&h.method.as_str()) {
                errs.push(
                    path(at, "method"),
                    format!("`{}` is not one of {}", h.method, HTTP_METHODS.join(", ")),
                );
            }
            let lower = h.url.to_ascii_lowercase();
            if h.url.len() > MAX_URL_LEN {
                errs.push(
                    path(at, "url"),
                    format!("is {} characters long; at most {MAX_URL_LEN}", h.url.len()),
                );
            } else if !(lower.starts_with("http://") || lower.starts_with("https://"))
                || h.url.len() < 8
            {
                errs.push(
                    path(at, "url"),
                    format!("`{}` is not an http:// or https:// URL", h.url),
                );
            }
            for name in h.headers.keys() {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    errs.push(
                        path(at, &format!("headers.{name}")),
                        "not a valid header name",
                    );
                }
            }
            if let Some(t) = &h.timeout
                && let Err(e) = parse_duration(t, false)
            {
                errs.push(path(at, "timeout"), e);
            }
            for (i, s) in h.expected_statuses.iter().enumerate() {
                if !(100..=599).contains(s) {
                    errs.push(
                        index(&path(at, "expected_statuses"), i),
                        format!("{s} is not an HTTP status"),
                    );
                }
            }
        }
        TaskSpec::Function(f) => {
            if f.name.is_empty() || f.name.len() > 200 {
                errs.push(
                    path(at, "name"),
                    "must name a registered function (1 to 200 characters)",
                );
            }
        }
    }
}

pub(crate) fn validate_retry(r: &RetrySpec, at: &str, errs: &mut ValidationErrors) -> RetryPolicy {
    let mut policy = RetryPolicy::none();
    if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS_LIMIT {
        errs.push(
            path(at, "max_attempts"),
            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
        );
    } else {
        policy.max_attempts = r.max_attempts;
    }
    let b = &r.backoff;
    let bp = path(at, "backoff");
    let initial = parse_duration(&b.initial, true).map_err(|e| errs.push(path(&bp, "initial"), e));
    let max = parse_duration(&b.max, true).map_err(|e| errs.push(path(&bp, "max"), e));
    if let (Ok(initial), Ok(max)) = (initial, max) {
        if max < initial {
            errs.push(path(&bp, "max"), "must be at least `initial`");
        }
        policy.initial = initial;
        policy.max = max;
    }
    if !(b.multiplier.is_finite() && (1.0..=100.0).contains(&b.multiplier)) {
        errs.push(path(&bp, "multiplier"), "must be between 1.0 and 100.0");
    } else {
        policy.multiplier = b.multiplier;
    }
    if !(b.jitter.is_finite() && (0.0..=1.0).contains(&b.jitter)) {
        errs.push(path(&bp, "jitter"), "must be between 0.0 and 1.0");
    } else {
        policy.jitter = b.jitter;
    }
    policy.on.clear();
    for (i, s) in r.on.iter().enumerate() {
        match s.parse::<RetryOn>() {
            Ok(on) => policy.on.push(on),
            Err(e) => errs.push(index(&path(at, "on"), i), e),
        }
    }
    policy
}
