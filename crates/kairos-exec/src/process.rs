//! `command` and `shell` tasks (and hooks): one child process in its own process group.
//!
//! Life of a process:
//! 1. The environment is built ([`crate::env`]) and the working directory checked; any problem
//!    is an `Error` outcome before anything starts.
//! 2. The child is started by the spawner thread ([`crate::spawn`]; on Linux a vfork-style
//!    `clone`, no copy of the server's memory) with stdin from `/dev/null` and stdout/stderr
//!    piped, becomes a session and group leader (`setsid`) and gets `PR_SET_PDEATHSIG(SIGKILL)`.
//! 3. A blocking waiter waits for the leader to exit *without reaping it* (`waitid(WNOWAIT)`),
//!    kills the rest of its group, then reaps it with `wait4` (status and resource usage). While
//!    the leader is unreaped its pid cannot be reused, so signals to the group never reach an
//!    unrelated process.
//! 4. Timeout or cancel: SIGTERM to the group, SIGKILL after the kill grace.
//! 5. Output readers drain the pipes; once the group is dead the pipes close. A process that
//!    left the group (its own `setsid`) could keep them open, so draining is bounded.

use std::io;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::run::{AttemptOutcome, AttemptStatus, ResourceUsage};
use kairos_core::spec::ProcessSettings;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::output::{LineSplitter, OutputBuffer};
use crate::spawn::{self, ChildSpec, Prepared, Spawned, Spawner};
use crate::sys::{self, ExitKind};
use crate::{RunContext, env};

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
    pub expected_exit_codes: &'a [i32],
    pub timeout: Option<SignedDuration>,
    pub kill_grace: SignedDuration,
    pub context: &'a RunContext,
    pub output: &'a Arc<OutputBuffer>,
    pub cancel: &'a CancellationToken,
}

/// The argv of a `command` task.
pub(crate) fn command_argv(argv: &[String]) -> Vec<&str> {
    argv.iter().map(String::as_str).collect()
}

/// The argv of a `shell` task.
pub(crate) fn shell_argv(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

/// Why the executor stopped the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
}

/// Runs the process to its end and reports the outcome (without output; the caller adds it).
pub(crate) async fn run(run: ProcessRun<'_>) -> AttemptOutcome {
    let Some(&program) = run.argv.first() else {
        return AttemptOutcome::error("argv is empty");
    };
    let env = match env::build_env(run.settings, run.context, &run.extra_env) {
        Ok(env) => env,
        Err(e) => return AttemptOutcome::error(e.to_string()),
    };
    let cwd = run.settings.cwd.as_deref();
    if let Some(cwd) = cwd {
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return AttemptOutcome::error(format!(
                    "working directory `{cwd}` is not a directory"
                ));
            }
            Err(e) => {
                return AttemptOutcome::error(format!("working directory `{cwd}`: {e}"));
            }
        }
    }
    let started = match spawn::prepare(ChildSpec {
        argv: &run.argv,
        env,
        cwd,
    }) {
        Ok(child) => spawn(child).await,
        Err(e) => Err(e),
    };
    let child = match started {
        Ok(child) => child,
        Err(e) => return AttemptOutcome::error(format!("cannot start `{program}`: {e}")),
    };
    let group = Arc::new(Group {
        pgid: child.pid,
        reaped: Mutex::new(false),
    });
    // Whatever happens to this future from here on, the group does not outlive it.
    let _guard = KillOnDrop(Arc::clone(&group));
    let streams = [("stdout", child.stdout), ("stderr", child.stderr)];

    let mut waiter = spawn_waiter(Arc::clone(&group));
    let mut readers = Vec::new();
    let mut capture_error = None;
    for (stream, fd) in streams {
        match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => readers.push(tokio::spawn(read_stream(
                rx,
                stream,
                Arc::clone(run.output),
            ))),
            Err(e) => capture_error = Some(format!("cannot capture {stream}: {e}")),
        }
    }
    if let Some(message) = capture_error {
        group.signal(Signal::KILL);
        let _ = waiter.await;
        return AttemptOutcome::error(message);
    }

    let timeout = run.timeout.map(to_std);
    let mut reaped = None;
    let stop = tokio::select! {
        biased;
        r = &mut waiter => {
            reaped = Some(r);
            None
        }
        _ = sleep_opt(timeout) => Some(Stop::Timeout),
        _ = run.cancel.cancelled() => Some(Stop::Cancel),
    };
    if let Some(stop) = stop {
        let why = match (stop, run.timeout) {
            (Stop::Timeout, Some(t)) => format!("{} timed out after {t:#}", run.role),
            _ => format!("{} cancelled", run.role),
        };
        run.output.push_stream_line(
            "kairos",
            &format!("{why}: sending SIGTERM to its process group"),
        );
        group.signal(Signal::TERM);
        let grace = to_std(run.kill_grace);
        tokio::select! {
            biased;
            r = &mut waiter => reaped = Some(r),
            _ = tokio::time::sleep(grace) => {
                let message = format!(
                    "{} still running after {:#}: sending SIGKILL to its process group",
                    run.role, run.kill_grace
                );
                run.output.push_stream_line("kairos", &message);
                group.signal(Signal::KILL);
            }
        }
    }
    let reaped = match reaped {
        Some(r) => r,
        None => waiter.await,
    };
    drain(readers, run.output).await;

    let (kind, usage) = match reaped {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => {
            return AttemptOutcome::error(format!("waiting for the process failed: {e}"));
        }
        Err(_) => return AttemptOutcome::error("the process waiter stopped unexpectedly"),
    };
    outcome(kind, usage, stop, run.expected_exit_codes)
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

/// A process group led by a child of this process.
struct Group {
    pgid: i32,
    /// Whether the leader was reaped; held while signalling so that a signal is never sent to a
    /// group id the kernel may have reused.
    reaped: Mutex<bool>,
}

impl Group {
    fn pid(&self) -> Option<Pid> {
        Pid::from_raw(self.pgid)
    }

    /// Signals the whole group, unless the leader was already reaped (then the group is dead).
    fn signal(&self, signal: Signal) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if let (false, Some(pid)) = (*reaped, self.pid()) {
            // ESRCH: nobody left in the group; nothing else can fail for our own child.
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Blocks until the leader exits, kills what is left of its group, reaps the leader.
    fn wait_and_reap(&self) -> Reaped {
        let pid = self.pid().ok_or_else(|| io::Error::other("invalid pid"))?;
        loop {
            match rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let mut reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        // Background children of the task never outlive the attempt.
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let result = sys::wait4(self.pgid);
        *reaped = true;
        result
    }
}

type Reaped = io::Result<(ExitKind, ResourceUsage)>;

/// Starts the blocking waiter of `group` on a thread of its own.
///
/// Not on tokio's blocking pool: a task may run for hours, and hundreds of them would starve
/// other users of the pool (file IO, SQLite). Falls back to the pool if no thread can be made.
fn spawn_waiter(group: Arc<Group>) -> tokio::sync::oneshot::Receiver<Reaped> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let slot = Arc::new(Mutex::new(Some(tx)));
    let wait = move || {
        let result = group.wait_and_reap();
        if let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(result);
        }
    };
    let thread = std::thread::Builder::new()
        .name("kairos-waiter".into())
        .stack_size(WAITER_STACK)
        .spawn(wait.clone());
    if thread.is_err() {
        drop(tokio::task::spawn_blocking(wait));
    }
    rx
}

/// The waiter only makes a few system calls.
const WAITER_STACK: usize = 128 * 1024;

/// Kills the group when the attempt's future ends or is dropped (a no-op once reaped).
struct KillOnDrop(Arc<Group>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.signal(Signal::KILL);
    }
}

async fn read_stream(
    mut rx: tokio::net::unix::pipe::Receiver,
    stream: &'static str,
    output: Arc<OutputBuffer>,
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

/// Waits for the readers to see end-of-file, for at most [`DRAIN_LIMIT`].
async fn drain(readers: Vec<tokio::task::JoinHandle<()>>, output: &OutputBuffer) {
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let all = futures::future::join_all(readers);
    if tokio::time::timeout(DRAIN_LIMIT, all).await.is_err() {
        for abort in aborts {
            abort.abort();
        }
        output.push_stream_line(
            "kairos",
            "output still open after the process group ended (a process left the group); stopped capturing",
        );
    }
}

async fn sleep_opt(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
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
