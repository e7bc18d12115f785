//! `command` and `shell` tasks (and hooks): one child process in its own process group.
//!
//! Life of a process:
//! 1. The environment is built ([`crate::env`]), the working directory checked and the
//!    exchange directory made ([`crate::exchange`]), on a blocking thread and under the
//!    attempt's timeout and cancel (a file system call may hang); any problem is an `Error`
//!    outcome before anything starts.
//! 2. The child is started by the spawner thread ([`crate::spawn`]; on Linux a vfork-style
//!    `clone`, no copy of the server's memory) with stdin from `/dev/null` and stdout/stderr
//!    piped, becomes a session and group leader (`setsid`) and gets `PR_SET_PDEATHSIG(SIGKILL)`.
//! 3. The leader's exit is noticed without reaping it ([`crate::group`]: a pidfd watched by
//!    tokio's reactor on Linux, else a waiter thread in `waitid(WNOWAIT)`); then the rest of
//!    its group is killed and the leader reaped with `wait4` (status and resource usage). While
//!    the leader is unreaped its pid cannot be reused, so signals to the group never reach an
//!    unrelated process.
//! 4. Timeout or cancel: SIGTERM to the group, SIGKILL after the kill grace.
//! 5. Output is read from both pipes in the attempt's own future while it waits; once the group
//!    is dead the pipes close. A process that left the group (its own `setsid`) could keep them
//!    open, so draining is bounded.
//! 6. Once the leader was reaped: a task's result is read from its exchange directory and the
//!    directory removed, on a blocking thread ([`crate::exchange::settle`]).

use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::run::{AttemptOutcome, AttemptStatus, ResourceUsage};
use kairos_core::spec::ProcessSettings;
use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cgroup::{self, CgroupGuard, CgroupLimits, TaskCgroup};
use crate::exchange::{self, ExchangeDir};
use crate::group::{Leader, Reaped, WaitMode};
use crate::output::{LineSplitter, OutputBuffer};
use crate::spawn::{self, ChildSpec, Prepared, Spawned, Spawner};
use crate::sys::Restrictions;
use crate::sys::{self, ExitKind};
use crate::{RunContext, env, identity, limits};

/// How long output is still read after the group was killed before capture stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Everything needed to run one task or hook process.
pub(crate) struct ProcessRun<'a> {
    /// What the process is, for messages: `task`, `pre-hook`, `post-hook`.
    pub role: &'a str,
    /// Program and arguments; `argv[0]` is looked up in the child's `PATH`.
    pub argv: Vec<&'a str>,
    pub settings: &'a ProcessSettings,
    /// Variables set after the user's and before the `KAIROS_*` ones.
    pub extra_env: Vec<(String, String)>,
    /// The process gets `KAIROS_RESULT` and its result is read (a task; hooks do not).
    pub takes_result: bool,
    /// The process gets the run's variables and exchange files (see
    /// [`crate::ExecRequest::run_vars`]).
    pub run_vars: bool,
    pub expected_exit_codes: &'a [i32],
    pub timeout: Option<SignedDuration>,
    pub kill_grace: SignedDuration,
    pub context: &'a RunContext,
    pub output: &'a Arc<OutputBuffer>,
    pub cancel: &'a CancellationToken,
    /// Cancelled: SIGKILL at once, without the grace (see [`crate::ExecRequest::kill`]).
    pub kill: &'a CancellationToken,
    /// Where the task's reports go (a task with a checkpoint file; `None` for hooks).
    pub reports: Option<&'a crate::ReportSink>,
}

/// The argv of a `command` task.
pub(crate) fn command_argv(argv: &[String]) -> Vec<&str> {
    argv.iter().map(String::as_str).collect()
}

/// The argv of a `shell` task.
pub(crate) fn shell_argv(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

/// Most preparations (see [`prepare_child`]) under way at once on blocking threads.
const MAX_PREPARING: usize = 128;

fn preparing_permits() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_PREPARING)))
        .clone()
}

/// Why the executor stopped the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
}

/// Runs the process to its end and reports the outcome (without output; the caller adds it).
pub(crate) async fn run(run: ProcessRun<'_>) -> AttemptOutcome {
    run_with(run, WaitMode::Auto, prepare_child).await
}

/// What [`prepare_child`] prepares a child from (owned: it moves to a blocking thread).
pub(crate) struct ChildInputs {
    pub argv: Vec<String>,
    pub settings: ProcessSettings,
    pub context: RunContext,
    pub extra_env: Vec<(String, String)>,
    pub takes_result: bool,
    /// The process gets a checkpoint file, read while it runs (someone takes its reports).
    pub takes_reports: bool,
    /// The process gets the run's variables and exchange files.
    pub run_vars: bool,
}

/// [`run`], noticing the leader's exit as `mode` says, with the child prepared by `prepare`
/// (tests put a hanging file system there).
async fn run_with<P>(run: ProcessRun<'_>, mode: WaitMode, prepare: P) -> AttemptOutcome
where
    P: FnOnce(&ChildInputs) -> Result<PreparedChild, String> + Send + 'static,
{
    let Some(&program) = run.argv.first() else {
        return AttemptOutcome::error("argv is empty");
    };
    let deadline = run.timeout.map(|t| Instant::now() + to_std(t));
    // Reading env and secret files and checking the working directory touch the file system,
    // where a call can block for good (a stuck network mount): a blocking thread does it, so
    // that only this attempt waits, and the attempt's timeout and cancel still apply. A hung
    // call keeps its thread; at most `MAX_PREPARING` preparations run at once, so hung ones
    // never use up the blocking threads every other part of the node needs (further attempts
    // wait for a place, under their timeout and cancel).
    let permit = match until_stopped(preparing_permits().acquire_owned(), deadline, run.cancel)
        .await
    {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return AttemptOutcome::error("the executor is shutting down"),
        Err(stop) => return stopped_before_start(stop, &run, "while waiting to read its files"),
    };
    let preparing = tokio::task::spawn_blocking({
        let inputs = ChildInputs {
            argv: run.argv.iter().map(|a| (*a).to_owned()).collect(),
            settings: run.settings.clone(),
            context: run.context.clone(),
            extra_env: run.extra_env.clone(),
            takes_result: run.takes_result,
            takes_reports: run.takes_result && run.reports.is_some(),
            run_vars: run.run_vars,
        };
        move || {
            let prepared = prepare(&inputs);
            drop(permit);
            prepared
        }
    });
    // Given up (timeout, cancel), a preparation that ends later is dropped on its thread, and
    // its exchange directory with it (see `ExchangeDir`'s drop).
    let PreparedChild {
        child: prepared,
        cgroup,
        notes,
        exchange,
    } = match until_stopped(preparing, deadline, run.cancel).await {
        Ok(Ok(Ok(prepared))) => prepared,
        Ok(Ok(Err(message))) => return AttemptOutcome::error(message),
        Ok(Err(e)) => return AttemptOutcome::error(format!("preparing `{program}` failed: {e}")),
        Err(stop) => return stopped_before_start(stop, &run, "while reading its files"),
    };
    for note in &notes {
        run.output.push_stream_line("kairos", note);
    }
    // The task's checkpoint file is read while it runs, and once more after it ended.
    let reporter = match (&exchange, run.reports) {
        (Some(dir), Some(sink)) => dir
            .report_reader()
            .map(|reader| exchange::Reporter::spawn(reader, sink.clone(), run.output.clone())),
        _ => None,
    };
    let mut outcome = run_prepared(&run, mode, deadline, prepared, cgroup).await;
    if let Some(reporter) = reporter {
        reporter.finish().await;
    }
    // The process ended, or never started: what it left is complete. (Should this future be
    // dropped instead, the directory goes with `exchange`'s drop.)
    if let Some(exchange) = exchange {
        exchange::settle(exchange, &mut outcome, run.output).await;
    }
    outcome
}

/// Starts the prepared child and supervises it to its end.
async fn run_prepared(
    run: &ProcessRun<'_>,
    mode: WaitMode,
    deadline: Option<Instant>,
    prepared: Prepared,
    cgroup: Option<CgroupGuard>,
) -> AttemptOutcome {
    let program = run.argv.first().copied().unwrap_or_default();
    // The spawner thread starts one process at a time; a start that hangs (a program on a
    // stuck mount) must not hold this attempt past its timeout either. If the wait is given
    // up, the spawner kills the process it started for nobody.
    let child = match until_stopped(spawn(prepared), deadline, run.cancel).await {
        Ok(Ok(child)) => child,
        Ok(Err(e)) => return AttemptOutcome::error(format!("cannot start `{program}`: {e}")),
        Err(stop) => return stopped_before_start(stop, run, "while starting"),
    };
    // Whatever happens to this future from here on, the group does not outlive it (see
    // `Leader`'s drop).
    let mut leader = match Leader::watch(child.pid, mode) {
        Ok(leader) => leader,
        Err(e) => return AttemptOutcome::error(format!("cannot watch `{program}`: {e}")),
    };
    let (stdout, stderr) = match (
        receiver(child.stdout, "stdout"),
        receiver(child.stderr, "stderr"),
    ) {
        (Ok(stdout), Ok(stderr)) => (stdout, stderr),
        (Err(message), _) | (_, Err(message)) => {
            leader.signal(Signal::KILL);
            let _ = leader.wait().await;
            return AttemptOutcome::error(message);
        }
    };

    // Output is read in this future, alongside the supervision: no task per stream.
    let mut reading = pin!(read_output(stdout, stderr, run.output));
    let mut read_all = false;
    let (reaped, stop) = {
        let mut supervising = pin!(supervise(&mut leader, run, deadline));
        loop {
            tokio::select! {
                biased;
                done = &mut supervising => break done,
                () = &mut reading, if !read_all => read_all = true,
            }
        }
    };
    if !read_all {
        // Something of the task still holds its output open: a process that left the group.
        // Its cgroup (where there is one) ends it now, rather than after the drain's patience.
        if let Some(killer) = cgroup
            .as_ref()
            .and_then(CgroupGuard::get)
            .map(TaskCgroup::killer)
        {
            let _ = tokio::task::spawn_blocking(killer).await;
        }
        drain(reading, run.output).await;
    }

    // The task's own figures and what the kernel did to it, from its cgroup; then anything of
    // it still running (it left the process group) is killed, and the cgroup removed. Cgroup
    // files are read on a blocking thread, as every file is.
    let (peak_kib, oom_killed) = match cgroup {
        Some(guard) => tokio::task::spawn_blocking(move || guard.finish())
            .await
            .unwrap_or((None, false)),
        None => (None, false),
    };
    if oom_killed {
        run.output.push_stream_line(
            "kairos",
            &format!("{} went over its memory limit and was killed", run.role),
        );
    }
    match reaped {
        Ok((kind, mut usage)) => {
            usage.max_rss_kib = peak_kib;
            outcome(kind, usage, stop, run.expected_exit_codes)
        }
        Err(e) => AttemptOutcome::error(format!("waiting for the process failed: {e}")),
    }
}

/// Waits for the leader to exit (see [`crate::group`]); on timeout or cancel, SIGTERM to the
/// group, SIGKILL after the kill grace. Returns once the leader was reaped.
async fn supervise(
    leader: &mut Leader,
    run: &ProcessRun<'_>,
    deadline: Option<Instant>,
) -> (Reaped, Option<Stop>) {
    let stop = match until_stopped(leader.wait(), deadline, run.cancel).await {
        Ok(reaped) => return (reaped, None),
        Err(stop) => stop,
    };
    let why = match (stop, run.timeout) {
        (Stop::Timeout, Some(t)) => format!("{} timed out after {t:#}", run.role),
        _ => format!("{} cancelled", run.role),
    };
    if !run.kill.is_cancelled() {
        run.output.push_stream_line(
            "kairos",
            &format!("{why}: sending SIGTERM to its process group"),
        );
        leader.signal(Signal::TERM);
        tokio::select! {
            biased;
            reaped = leader.wait() => return (reaped, Some(stop)),
            () = tokio::time::sleep(to_std(run.kill_grace)) => {}
            () = run.kill.cancelled() => {}
        }
    }
    let message = if run.kill.is_cancelled() {
        format!("{why}: stopped at once, sending SIGKILL to its process group")
    } else {
        format!(
            "{} still running after {:#}: sending SIGKILL to its process group",
            run.role, run.kill_grace
        )
    };
    run.output.push_stream_line("kairos", &message);
    leader.signal(Signal::KILL);
    (leader.wait().await, Some(stop))
}

/// The read end of an output pipe, registered with the reactor.
fn receiver(
    fd: std::os::fd::OwnedFd,
    stream: &str,
) -> Result<tokio::net::unix::pipe::Receiver, String> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| format!("cannot capture {stream}: {e}"))
}

fn outcome(
    kind: ExitKind,
    usage: ResourceUsage,
    stop: Option<Stop>,
    expected: &[i32],
) -> AttemptOutcome {
    let exit_code = match kind {
        ExitKind::Code(code) => Some(code),
        ExitKind::Signal(_) => None,
    };
    let status = match (stop, kind) {
        // Whatever the process did after Kairos signalled it, the attempt ends as the signal's
        // reason.
        (Some(Stop::Timeout), _) => AttemptStatus::TimedOut,
        (Some(Stop::Cancel), _) => AttemptStatus::Cancelled,
        (None, ExitKind::Code(code)) if expected.contains(&code) => AttemptStatus::Succeeded,
        (None, ExitKind::Code(code)) => AttemptStatus::ExitCode { code },
        (None, ExitKind::Signal(signal)) => AttemptStatus::Signal { signal },
    };
    AttemptOutcome {
        exit_code,
        usage: Some(usage),
        ..AttemptOutcome::from_status(status)
    }
}

/// Reads stdout and stderr to their ends, line by line, into `output`.
async fn read_output(
    stdout: tokio::net::unix::pipe::Receiver,
    stderr: tokio::net::unix::pipe::Receiver,
    output: &OutputBuffer,
) {
    futures::future::join(
        read_stream(stdout, "stdout", output),
        read_stream(stderr, "stderr", output),
    )
    .await;
}

async fn read_stream(
    mut rx: tokio::net::unix::pipe::Receiver,
    stream: &'static str,
    output: &OutputBuffer,
) {
    let mut buf = vec![0u8; 8192];
    let mut splitter = LineSplitter::default();
    let mut emit = |line: &str| output.push_stream_line(stream, line);
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => splitter.feed(&buf[..n], &mut emit),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    splitter.finish(&mut emit);
}

/// Lets the output be read to its end, for at most [`DRAIN_LIMIT`] after the group ended.
async fn drain(reading: Pin<&mut impl Future<Output = ()>>, output: &OutputBuffer) {
    if tokio::time::timeout(DRAIN_LIMIT, reading).await.is_err() {
        output.push_stream_line(
            "kairos",
            "output still open after the process group ended (a process left the group); stopped capturing",
        );
    }
}

/// A child ready to start, with its cgroup (where there is one), its exchange directory (where
/// it has one) and lines for the output.
pub(crate) struct PreparedChild {
    pub child: Prepared,
    pub cgroup: Option<CgroupGuard>,
    pub exchange: Option<ExchangeDir>,
    pub notes: Vec<String>,
}

/// Everything the child needs, from the file system and the spec: its identity (`run_as`), its
/// environment (env and secret files read), its checked working directory, its exchange
/// directory, its limits and cgroup, its argv. Blocking: runs on a blocking thread. `Err` is the
/// attempt's error message.
fn prepare_child(inputs: &ChildInputs) -> Result<PreparedChild, String> {
    let ChildInputs {
        argv,
        settings,
        context,
        extra_env,
        takes_result,
        takes_reports,
        run_vars,
    } = inputs;
    let server_uid = identity::current_uid();
    let identity = settings
        .run_as
        .as_ref()
        .map(|run_as| identity::resolve(run_as, server_uid))
        .transpose()?;
    let mut env = env::build_env(settings, context, extra_env, identity.as_ref(), *run_vars)
        .map_err(|e| e.to_string())?;
    let cwd = settings.cwd.as_deref();
    if let Some(cwd) = cwd {
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("working directory `{cwd}` is not a directory")),
            Err(e) => return Err(format!("working directory `{cwd}`: {e}")),
        }
    }
    let task_uid = identity.as_ref().map_or(server_uid, |i| i.uid);
    let cgroups = cgroup::setup().as_ref().ok();
    let mut plan = limits::plan(&settings.limits, cgroups, task_uid, server_uid)?;
    if server_uid != 0 {
        limits::clamp_to_hard_limits(&mut plan);
    }
    let mut cgroup_notes = Vec::new();
    let cgroup = match cgroups {
        Some(setup) => {
            let name = format!("run-{}-{}", context.run_id, context.attempt);
            match TaskCgroup::create(setup, &name, plan.cgroup) {
                Ok((task, notes)) => {
                    cgroup_notes = notes;
                    Some(CgroupGuard::new(task))
                }
                // Limits that need the cgroup cannot go without it.
                Err(e) if plan.cgroup != CgroupLimits::default() => {
                    return Err(format!(
                        "cannot create the task's cgroup for its limits: {e}"
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a task cgroup; running without");
                    None
                }
            }
        }
        None => None,
    };
    let procs = match cgroup.as_ref().and_then(CgroupGuard::get) {
        Some(task) => task
            .procs_files()
            .map_err(|e| format!("cannot open the task's cgroup: {e}"))?,
        None => Vec::new(),
    };
    let mut notes: Vec<String> = plan.summary.into_iter().collect();
    notes.extend(
        plan.not_applied
            .iter()
            .map(|why| format!("limit not applied: {why}")),
    );
    notes.extend(plan.lowered);
    if plan.cgroup != CgroupLimits::default() {
        notes.extend(cgroup_notes);
    }
    if let Some(identity) = &identity {
        notes.push(format!(
            "running as user {} (uid {}, gid {})",
            identity.user, identity.uid, identity.gid
        ));
    }
    // Last of the file system work, so that little can fail after it.
    let owner = exchange::Owner {
        uid: task_uid,
        gid: identity
            .as_ref()
            .map_or_else(|| rustix::process::getegid().as_raw(), |i| i.gid),
        chown: identity.as_ref().is_some_and(|i| i.switch),
    };
    // A process that is no run's exchanges nothing.
    let exchange = if *run_vars {
        exchange::create(
            &std::env::temp_dir(),
            context,
            owner,
            *takes_result,
            *takes_reports,
        )?
    } else {
        None
    };
    if let Some(exchange) = &exchange {
        // After every other layer (see `crate::env`): a task cannot override them.
        env.extend(exchange.vars().into_iter().map(|(k, v)| (k.into(), v)));
    }
    let restrictions = Restrictions::new(procs, &plan.rlimits, identity.as_ref());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let program = argv.first().copied().unwrap_or_default();
    let child = match spawn::prepare(ChildSpec {
        argv: &argv,
        env,
        cwd,
        restrictions,
    }) {
        Ok(child) => child,
        Err(e) => {
            // Here, on this blocking thread, rather than by the guard's drop.
            if let Some(exchange) = exchange {
                exchange.discard();
            }
            return Err(format!("cannot start `{program}`: {e}"));
        }
    };
    Ok(PreparedChild {
        child,
        cgroup,
        exchange,
        notes,
    })
}

/// Waits for `fut` until the deadline passes or the attempt is cancelled.
async fn until_stopped<T>(
    fut: impl Future<Output = T>,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        value = fut => Ok(value),
        () = sleep_until_opt(deadline) => Err(Stop::Timeout),
        () = cancel.cancelled() => Err(Stop::Cancel),
    }
}

/// The outcome of a process stopped by its timeout or a cancel before it ran.
fn stopped_before_start(stop: Stop, run: &ProcessRun<'_>, phase: &str) -> AttemptOutcome {
    let (status, why) = match (stop, run.timeout) {
        (Stop::Timeout, Some(t)) => (
            AttemptStatus::TimedOut,
            format!(
                "{} timed out after {t:#} {phase}, before it started",
                run.role
            ),
        ),
        _ => (
            AttemptStatus::Cancelled,
            format!("{} cancelled {phase}, before it started", run.role),
        ),
    };
    run.output.push_stream_line("kairos", &why);
    AttemptOutcome::from_status(status)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A non-negative std duration (negative values count as zero).
pub(crate) fn to_std(d: SignedDuration) -> Duration {
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

type SpawnRequest = (Prepared, tokio::sync::oneshot::Sender<io::Result<Spawned>>);

/// Starts `child` on the spawner thread.
///
/// `PR_SET_PDEATHSIG` fires when the thread that started the child exits. Tokio's blocking
/// threads exit when idle, so children are started from one thread that lives as long as the
/// process: the signal then means what it should, "the node died". The thread only starts
/// processes (everything else was prepared by the caller) and is blocked for each one until it
/// has called `execve`.
async fn spawn(child: Prepared) -> io::Result<Spawned> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("kairos-spawner".into())
            .spawn(move || spawner_loop(rx))
            .ok()
            .map(|_| tx)
    });
    let sender = sender
        .as_ref()
        .ok_or_else(|| io::Error::other("the spawner thread could not start"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    sender
        .send((child, tx))
        .map_err(|_| io::Error::other("the spawner thread stopped"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread stopped"))?
}

fn spawner_loop(rx: mpsc::Receiver<SpawnRequest>) {
    // Made on first use, and again after a failure (no stack or no /dev/null).
    let mut spawner: Option<Spawner> = None;
    for (child, reply) in rx {
        let started = match &mut spawner {
            Some(spawner) => spawner.spawn(&child),
            None => Spawner::new().and_then(|s| spawner.insert(s).spawn(&child)),
        };
        if let Err(Ok(spawned)) = reply.send(started) {
            // Nobody is waiting any more (the attempt was dropped): do not leave it running.
            if let Some(pid) = Pid::from_raw(spawned.pid) {
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            }
            let _ = sys::wait4(spawned.pid);
        }
    }
}

/// The process life cycle with both ways of noticing the leader's exit: the pidfd (where the
/// system has one) and the waiter thread it falls back to.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use kairos_core::spec::ProcessSettings;
    use rustix::process::{WaitId, WaitIdOptions};

    use super::*;

    const MODES: [WaitMode; 2] = [WaitMode::Auto, WaitMode::Thread];

    /// Upper bound for waits on conditions (never reached when the code works).
    const PATIENCE: Duration = Duration::from_secs(20);

    struct Setup {
        settings: ProcessSettings,
        context: RunContext,
        output: Arc<OutputBuffer>,
        cancel: CancellationToken,
        kill: CancellationToken,
    }

    fn setup() -> Setup {
        Setup {
            settings: ProcessSettings::default(),
            context: RunContext {
                job: "job".into(),
                namespace: "ns".into(),
                run_id: 1,
                attempt: 1,
                scheduled_for: jiff::Timestamp::UNIX_EPOCH,
                step: None,
                params: None,
                upstream_results: None,
                event: None,
                upstream_run_id: None,
                upstream_result: None,
                checkpoint: None,
                run_token: None,
                api_url: None,
            },
            output: Arc::new(OutputBuffer::default()),
            cancel: CancellationToken::new(),
            kill: CancellationToken::new(),
        }
    }

    impl Setup {
        async fn shell(
            &self,
            script: &str,
            timeout: Option<SignedDuration>,
            mode: WaitMode,
        ) -> AttemptOutcome {
            let run = ProcessRun {
                role: "task",
                argv: shell_argv(script),
                settings: &self.settings,
                extra_env: Vec::new(),
                takes_result: true,
                run_vars: true,
                expected_exit_codes: &[0],
                timeout,
                kill_grace: SignedDuration::from_millis(300),
                context: &self.context,
                output: &self.output,
                cancel: &self.cancel,
                kill: &self.kill,
                reports: None,
            };
            run_with(run, mode, prepare_child).await
        }

        /// The text of the captured `stream` lines.
        fn lines(&self, stream: &str) -> Vec<String> {
            let marker = format!(" {stream} ");
            self.output
                .snapshot()
                .lines()
                .filter_map(|line| line.split_once(&marker).map(|(_, text)| text.to_owned()))
                .collect()
        }

        /// The number printed as `pid=N` by a script.
        fn printed_pid(&self) -> i32 {
            let text = self.output.snapshot();
            text.split("pid=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no pid in output:\n{text}"))
        }

        async fn until_output_contains(&self, needle: &str) {
            let wait = async {
                loop {
                    let seen = self.output.version();
                    if self.output.snapshot().contains(needle) {
                        return;
                    }
                    self.output.changed_since(seen).await;
                }
            };
            tokio::time::timeout(PATIENCE, wait).await.unwrap();
        }
    }

    /// Live (non-zombie) processes of group `pgid`, from `/proc`.
    fn live_members(pgid: i32) -> Vec<i32> {
        let mut members = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command name, which is in parentheses.
            let Some((_, after)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = after.split_whitespace().collect();
            let (state, group) = (fields[0], fields[2].parse::<i32>().unwrap_or(0));
            if group == pgid && state != "Z" && state != "X" {
                members.push(pid);
            }
        }
        members
    }

    /// Whether `pid` is no child of this process any more (reaped), rather than running or a
    /// zombie.
    fn reaped(pid: i32) -> bool {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        let pid = Pid::from_raw(pid).unwrap();
        matches!(
            rustix::process::waitid(WaitId::Pid(pid), options),
            Err(rustix::io::Errno::CHILD)
        )
    }

    /// Waits until the group has no live member and its leader was reaped.
    async fn group_gone_and_leader_reaped(pgid: i32) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !(live_members(pgid).is_empty() && reaped(pgid)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "group {pgid}: live {:?}, leader reaped: {}",
                live_members(pgid),
                reaped(pgid)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn exit_code_output_and_usage_come_back() {
        for mode in MODES {
            let s = setup();
            let outcome = s
                .shell("echo pid=$$; echo oops >&2; exit 3", None, mode)
                .await;
            assert_eq!(
                outcome.status,
                AttemptStatus::ExitCode { code: 3 },
                "{mode:?}"
            );
            assert_eq!(outcome.exit_code, Some(3), "{mode:?}");
            let usage = outcome.usage.unwrap();
            assert!(
                usage.max_rss_kib.is_none_or(|kib| kib > 0),
                "{mode:?}: {usage:?}"
            );
            assert_eq!(s.lines("stderr"), ["oops"], "{mode:?}");
            // The outcome comes back only once the leader was reaped.
            assert!(reaped(s.printed_pid()), "{mode:?}");
        }
    }

    /// A file system call that hangs while the child is prepared (a stuck mount) holds only its
    /// own attempt: the timeout and the cancel still end it, and the hung call is left behind on
    /// its blocking thread.
    #[tokio::test]
    async fn a_hanging_preparation_is_stopped_by_timeout_and_cancel() {
        for stop in [Stop::Timeout, Stop::Cancel] {
            let s = setup();
            let (release, hang) = mpsc::channel::<()>();
            let hanging = move |_: &ChildInputs| {
                let _ = hang.recv();
                Err("released".to_owned())
            };
            let timeout = match stop {
                Stop::Timeout => Some(SignedDuration::from_millis(300)),
                Stop::Cancel => {
                    s.cancel.cancel();
                    None
                }
            };
            let run = ProcessRun {
                role: "task",
                argv: shell_argv("true"),
                settings: &s.settings,
                extra_env: Vec::new(),
                takes_result: true,
                run_vars: true,
                expected_exit_codes: &[0],
                timeout,
                kill_grace: SignedDuration::from_millis(300),
                context: &s.context,
                output: &s.output,
                cancel: &s.cancel,
                kill: &s.kill,
                reports: None,
            };
            let outcome = tokio::time::timeout(PATIENCE, run_with(run, WaitMode::Auto, hanging))
                .await
                .expect("the attempt ends although its preparation hangs");
            let expected = match stop {
                Stop::Timeout => AttemptStatus::TimedOut,
                Stop::Cancel => AttemptStatus::Cancelled,
            };
            assert_eq!(outcome.status, expected);
            let output = s.output.snapshot();
            assert!(
                output.contains("while reading its files, before it started"),
                "{output}"
            );
            drop(release);
        }
    }

    #[tokio::test]
    async fn a_signal_is_reported() {
        for mode in MODES {
            let outcome = setup().shell("kill -USR1 $$", None, mode).await;
            let signal = libc::SIGUSR1;
            assert_eq!(outcome.status, AttemptStatus::Signal { signal }, "{mode:?}");
            assert!(outcome.usage.is_some(), "{mode:?}");
        }
    }

    #[tokio::test]
    async fn an_exiting_leader_takes_its_group_along_even_if_it_holds_the_pipes() {
        for mode in MODES {
            let s = setup();
            let outcome = s
                .shell("echo pid=$$; sleep 300 & echo leader done", None, mode)
                .await;
            assert_eq!(outcome.status, AttemptStatus::Succeeded, "{mode:?}");
            assert!(s.lines("stdout").contains(&"leader done".to_owned()));
            assert!(outcome.usage.is_some(), "{mode:?}");
            group_gone_and_leader_reaped(s.printed_pid()).await;
        }
    }

    #[tokio::test]
    async fn a_timeout_signals_the_group_and_the_leader_is_still_reaped() {
        for mode in MODES {
            let s = setup();
            let timeout = Some(SignedDuration::from_millis(500));
            let script = "trap '' TERM; echo pid=$$; sleep 300 & sleep 300";
            let outcome = s.shell(script, timeout, mode).await;
            assert_eq!(outcome.status, AttemptStatus::TimedOut, "{mode:?}");
            let output = s.output.snapshot();
            assert!(output.contains("sending SIGKILL"), "{mode:?}: {output}");
            assert!(outcome.usage.is_some(), "{mode:?}");
            group_gone_and_leader_reaped(s.printed_pid()).await;
        }
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group_and_reaps_the_leader() {
        for mode in MODES {
            let s = setup();
            {
                let running = s.shell("echo pid=$$; sleep 300 & sleep 300", None, mode);
                tokio::select! {
                    outcome = running => panic!("{mode:?}: finished: {outcome:?}"),
                    () = s.until_output_contains("pid=") => {}
                }
            }
            group_gone_and_leader_reaped(s.printed_pid()).await;
        }
    }

    #[tokio::test]
    async fn many_short_processes_at_once_are_all_reaped() {
        for mode in MODES {
            let runs: Vec<Setup> = (0..200).map(|_| setup()).collect();
            let outcomes =
                futures::future::join_all(runs.iter().map(|s| s.shell("echo pid=$$", None, mode)))
                    .await;
            for (s, outcome) in runs.iter().zip(outcomes) {
                assert_eq!(outcome.status, AttemptStatus::Succeeded, "{mode:?}");
                assert!(outcome.usage.is_some(), "{mode:?}");
                let pid = s.printed_pid();
                assert!(reaped(pid), "{mode:?}: {pid} is not reaped");
            }
        }
    }

    #[tokio::test]
    async fn the_exit_is_noticed_through_a_pidfd_unless_told_otherwise() {
        for mode in MODES {
            let prepared = spawn::prepare(ChildSpec {
                argv: &["/bin/true"],
                env: Default::default(),
                cwd: None,
                restrictions: Default::default(),
            })
            .unwrap();
            let child = spawn(prepared).await.unwrap();
            let mut leader = Leader::watch(child.pid, mode).unwrap();
            // Linux 5.3 or later has pidfds.
            let pidfd_expected = cfg!(target_os = "linux") && mode == WaitMode::Auto;
            assert_eq!(leader.uses_pidfd(), pidfd_expected, "{mode:?}");
            let (kind, _) = leader.wait().await.unwrap();
            assert_eq!(kind, ExitKind::Code(0), "{mode:?}");
            assert!(reaped(child.pid), "{mode:?}");
        }
    }
}
