//! The guard: a small process beside a server that ends what the server's tasks left running
//! when the server dies without stopping them (`kill -9`, the OOM killer, a crash).
//!
//! A task's main process dies with the server (`PR_SET_PDEATHSIG`), but not the processes it
//! started: a shell's `sleep`, a pipeline, a worker pool. They would keep running, and the run
//! they belong to is started again elsewhere once its lease has run out: the same task twice at
//! once. Under systemd (`KillMode=control-group`) or in a container the supervisor ends them;
//! started any other way, nothing would.
//!
//! The server starts the guard once ([`start`]) with a pipe as its standard input, and tells it
//! each process group a task or hook starts (`+PGID`) and each one it has finished with
//! (`-PGID`, written after the group was killed and before its leader is reaped, so that the
//! id cannot have been reused meanwhile). When the pipe ends — the server is gone, however it
//! went — the guard kills every group still registered and exits ([`run`]). A server that stops
//! normally has already stopped its tasks: the guard finds nothing left.
//!
//! What it does not cover: a process that left its task's process group (a daemon that called
//! `setsid`) survives, unless the task ran in a cgroup of its own, which the next server to
//! start on the machine empties. Writes to the guard never block the server: the pipe is
//! non-blocking and a registration that does not fit is dropped with a warning.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::process::{Pid, Signal};

/// The pipe to the guard, once started.
static GUARD: OnceLock<Mutex<ChildStdin>> = OnceLock::new();

/// Starts the guard: `program` with `args`, which must end up calling [`run`] (the `kairos`
/// binary has a hidden mode for it). It runs in a process group of its own, so that a Ctrl-C
/// meant for the server does not end it first. Once per process.
pub fn start(program: &Path, args: &[&str]) -> io::Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("the guard has no standard input"))?;
    let flags = rustix::fs::fcntl_getfl(&pipe)?;
    rustix::fs::fcntl_setfl(&pipe, flags | rustix::fs::OFlags::NONBLOCK)?;
    // Not waited for: it exits after this process (a guard that died early stays a zombie).
    drop(child);
    GUARD
        .set(Mutex::new(pipe))
        .map_err(|_| io::Error::other("the guard is started already"))
}

/// Whether a guard was started in this process.
pub fn started() -> bool {
    GUARD.get().is_some()
}

/// Registers the process group `pgid`, led by a child of this process that was just started.
pub(crate) fn watch(pgid: i32) {
    tell('+', pgid);
}

/// Forgets the process group `pgid`: its leader has exited and the rest of the group was
/// killed; call before reaping the leader.
pub(crate) fn forget(pgid: i32) {
    tell('-', pgid);
}

fn tell(op: char, pgid: i32) {
    let Some(pipe) = GUARD.get() else {
        return;
    };
    let line = format!("{op}{pgid}\n");
    let mut pipe = pipe.lock().unwrap_or_else(|p| p.into_inner());
    // A line is far below PIPE_BUF: it is written whole or not at all.
    if let Err(e) = pipe.write_all(line.as_bytes()) {
        tracing::warn!(
            pgid,
            error = %e,
            "cannot tell the guard about a task's process group: if this server is killed, \
             what that task started may outlive it"
        );
    }
}

/// The guard's whole life: reads registrations from standard input until it ends, then kills
/// every process group still registered. Ignores SIGINT, SIGTERM and SIGHUP, so that a stop of
/// the server's whole group or service does not end it before the server.
pub fn run() {
    crate::sys::ignore_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    let groups = read_registrations(io::stdin().lock());
    for pgid in groups {
        if let Some(pid) = Pid::from_raw(pgid) {
            // ESRCH: the group is gone already.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

/// The groups registered and not forgotten when `input` ends (or fails).
fn read_registrations(input: impl BufRead) -> HashSet<i32> {
    let mut groups = HashSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (op, pgid) = line.split_at(line.len().min(1));
        let Ok(pgid) = pgid.parse::<i32>() else {
            continue;
        };
        match op {
            "+" if pgid > 1 => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_groups_still_registered_at_the_end_are_kept() {
        let input = "+100\n+200\n-100\n+300\nnoise\n+1\n+-5\n-999\n+400";
        let groups = read_registrations(input.as_bytes());
        assert_eq!(groups, HashSet::from([200, 300, 400]));
    }
}
