//! The reaper: a small process beside a server that ends what the server's tasks left running
//! when the server dies without stopping them (`kill -9`, the OOM killer, a crash).
//!
//! A task's main process dies with the server (`PR_SET_PDEATHSIG`), but not the processes it
//! started: a shell's `sleep`, a pipeline, a worker pool. They would keep running, and the run
//! they belong to is started again elsewhere once its lease has run out: the same task twice at
//! once. Under systemd (`KillMode=control-group`) or in a container the supervisor ends them;
//! started any other way, nothing would.
//!
//! A server that wants one starts it once ([`start`]; `kairos server` does, a program that
//! embeds Kairos chooses) with a pipe as its standard input, and tells it each process group a
//! task or hook starts (`+PGID`) and each one it has finished with (`-PGID`, written after the
//! group was killed and before its leader is reaped, so that the id cannot have been reused
//! meanwhile). When the pipe ends (the server is gone, however it went) the reaper kills every
//! group still registered and exits ([`run`]). A server that stops normally has already
//! stopped its tasks: the reaper finds nothing left.
//!
//! Writes to the reaper never block the server: the pipe is non-blocking. A start it cannot be
//! told about is only unprotected. An end it cannot be told about would leave a group id that
//! may be reused registered, so then the reaper is killed (it is this process's unreaped child:
//! its pid is certainly it) and no longer used: without a reaper nothing is killed by mistake.
//!
//! What it does not cover: a process that left its task's process group (a daemon that called
//! `setsid`, a job-control shell's `set -m`) survives, unless the task ran in a cgroup of its
//! own, which the next server to start on the machine empties; a task started in the moment
//! the server dies, before its group is registered.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::process::{Pid, Signal};

/// The reaper, once started; `None` inside once it can no longer be told everything.
static REAPER: OnceLock<Mutex<Option<Reaper>>> = OnceLock::new();

struct Reaper {
    pipe: ChildStdin,
    pid: Pid,
}

/// Starts the reaper: `program` (named `name` in process lists) with `args`, which must end up
/// calling [`run`] (the `kairos` binary has a hidden mode for it). It runs in a process group
/// of its own, so that a Ctrl-C meant for the server does not end it first. Once per process.
pub fn start(program: &Path, name: &str, args: &[&str]) -> io::Result<()> {
    if REAPER.get().is_some() {
        return Err(io::Error::other("the reaper is started already"));
    }
    let mut child = Command::new(program)
        .arg0(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()?;
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| io::Error::other("no pid"))?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("the reaper has no standard input"))?;
    let flags = rustix::fs::fcntl_getfl(&pipe)?;
    rustix::fs::fcntl_setfl(&pipe, flags | rustix::fs::OFlags::NONBLOCK)?;
    // Not waited for: it exits after this process. One that dies early stays a zombie, so its
    // pid is never another process's.
    drop(child);
    REAPER
        .set(Mutex::new(Some(Reaper { pipe, pid })))
        .map_err(|_| io::Error::other("the reaper is started already"))
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
    let Some(reaper) = REAPER.get() else {
        return;
    };
    let mut reaper = reaper.lock().unwrap_or_else(|p| p.into_inner());
    let Some(r) = reaper.as_mut() else {
        return;
    };
    // A line is far below PIPE_BUF: it is written whole or not at all.
    let Err(e) = r.pipe.write_all(format!("{op}{pgid}\n").as_bytes()) else {
        return;
    };
    if op == '+' && e.kind() == io::ErrorKind::WouldBlock {
        tracing::warn!(
            pgid,
            "the reaper is behind: if this server is killed, what this task starts may outlive it"
        );
        return;
    }
    // The reaper is gone, or might now kill a group id that gets reused: it goes.
    let _ = rustix::process::kill_process(r.pid, Signal::KILL);
    *reaper = None;
    tracing::error!(
        error = %e,
        "the reaper cannot be told about the tasks' process groups any more and was stopped: if \
         this server is killed, what its tasks started may outlive it"
    );
}

/// The reaper's whole life: reads registrations from standard input until it ends, then kills
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

/// The groups registered and not forgotten when `input` ends (or fails). Lines that are not a
/// registration are skipped.
fn read_registrations(mut input: impl BufRead) -> HashSet<i32> {
    let mut groups = HashSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = std::str::from_utf8(&line).unwrap_or_default().trim_end();
        let parse = |s: &str| s.parse::<i32>().ok().filter(|pgid| *pgid > 1);
        if let Some(pgid) = text.strip_prefix('+').and_then(parse) {
            groups.insert(pgid);
        } else if let Some(pgid) = text.strip_prefix('-').and_then(parse) {
            groups.remove(&pgid);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_groups_still_registered_at_the_end_are_kept() {
        let input: &[u8] =
            b"+100\n+200\n-100\n+300\nnoise\n+1\n+-5\n-999\n\xe2\x82\xac1\n\xff\xfe\n+400";
        let groups = read_registrations(input);
        assert_eq!(groups, HashSet::from([200, 300, 400]));
    }
}
