//! The process group of a task or hook, and its leader: signalling the group, noticing that the
//! leader exited, reaping it.
//!
//! # Model
//!
//! The leader is a child of this process and leads its own process group (its pid is the group
//! id). While the leader is unreaped (running, or a zombie) its pid cannot be reused, so the
//! group is signalled only then: [`Group::signal`] and the reap hold the same lock, and after
//! the reap signalling is a no-op.
//!
//! When the leader exits, what is left of its group (background children that may hold the
//! output pipes open) is killed, and only then is the leader reaped with `wait4`, which gives
//! its exit status and resource usage.
//!
//! # Noticing the exit
//!
//! - Linux (5.3 or later): a pidfd of the leader (`pidfd_open`), registered with tokio's reactor.
//!   It becomes readable when the leader exited, still unreaped. No thread and no task of its
//!   own: the attempt's future awaits it.
//! - Fallback (no pidfd: older kernels, other systems, or no descriptor to spare): a thread per
//!   process blocked in `waitid(WNOWAIT)`. Not on tokio's blocking pool: a task may run for
//!   hours, and hundreds of them would starve the pool's other users (file IO, SQLite).
//!
//! # Failure handling
//!
//! If the [`Leader`] is dropped before its leader was reaped (the attempt's future was dropped),
//! the group gets `SIGKILL` and a waiter thread reaps the leader, so that no zombie is left.
//! If this whole process dies, the [reaper](crate::reaper) kills the groups it had not reaped.

use std::io;
use std::sync::{Arc, Mutex};

use kairos_core::run::ResourceUsage;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::sys::{self, ExitKind};

/// How the leader ended and what it used, once reaped.
pub(crate) type Reaped = io::Result<(ExitKind, ResourceUsage)>;

/// How to notice the leader's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitMode {
    /// A pidfd where the system has them, else a waiter thread.
    Auto,
    /// A waiter thread (the fallback; tests force it to keep it working).
    #[cfg_attr(not(test), allow(dead_code, reason = "only tests force the fallback"))]
    Thread,
}

/// A process group led by a child of this process.
struct Group {
    pgid: Pid,
    /// Whether the leader was reaped; held while signalling so that a signal is never sent to a
    /// group id the kernel may have reused.
    reaped: Mutex<bool>,
}

impl Group {
    /// Signals the whole group, unless the leader was already reaped (then the group is dead).
    fn signal(&self, signal: Signal) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            // ESRCH: nobody left in the group; nothing else can fail for our own child.
            let _ = rustix::process::kill_process_group(self.pgid, signal);
        }
    }

    /// Kills what is left of the group and reaps the leader, which has exited: `wait4` returns
    /// at once.
    fn kill_rest_and_reap(&self) -> Reaped {
        let mut reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        // Background children of the task never outlive the attempt.
        let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
        // Before the reap: until then the group id cannot be reused.
        crate::reaper::forget(self.pgid.as_raw_nonzero().get());
        let result = sys::wait4(self.pgid.as_raw_nonzero().get());
        *reaped = true;
        result
    }

    /// Blocks until the leader exits, then kills the rest of the group and reaps the leader.
    fn wait_and_reap(&self) -> Reaped {
        loop {
            match rustix::process::waitid(
                WaitId::Pid(self.pgid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::CHILD) => {
                    // Reaped by someone else (see `leader_exited`).
                    *self.reaped.lock().unwrap_or_else(|p| p.into_inner()) = true;
                    crate::reaper::forget(self.pgid.as_raw_nonzero().get());
                    return Err(io::Error::from_raw_os_error(libc::ECHILD));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.kill_rest_and_reap()
    }

    /// Whether the leader exited (without reaping it).
    #[cfg(target_os = "linux")]
    fn leader_exited(&self) -> io::Result<bool> {
        loop {
            match rustix::process::waitid(
                WaitId::Pid(self.pgid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
            ) {
                Ok(status) => return Ok(status.is_some()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::CHILD) => {
                    // Someone else reaped it (an embedding program that ignores SIGCHLD, say):
                    // its pid may be reused, so the group must never be signalled again.
                    *self.reaped.lock().unwrap_or_else(|p| p.into_inner()) = true;
                    crate::reaper::forget(self.pgid.as_raw_nonzero().get());
                    return Err(io::Error::from_raw_os_error(libc::ECHILD));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The leader of a started child's group, watched for its exit. Dropping it before
/// [`wait`](Self::wait) returned kills the group (see the module doc).
pub(crate) struct Leader {
    group: Arc<Group>,
    watch: Watch,
}

enum Watch {
    /// Readable once the leader exited.
    #[cfg(target_os = "linux")]
    Pidfd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    /// The waiter thread's result.
    Thread(tokio::sync::oneshot::Receiver<Reaped>),
    /// Reaped, or handed over to a waiter thread.
    Done,
}

impl Leader {
    /// Starts watching `pid`, a child of this process that leads its own group and has not been
    /// reaped. Must be called within a tokio runtime (with IO enabled).
    pub(crate) fn watch(pid: i32, mode: WaitMode) -> io::Result<Self> {
        let pgid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("invalid pid"))?;
        let group = Arc::new(Group {
            pgid,
            reaped: Mutex::new(false),
        });
        // If this process dies now, the reaper ends what the group started.
        crate::reaper::watch(pid);
        let watch = match mode {
            WaitMode::Auto => pidfd_watch(pgid),
            WaitMode::Thread => None,
        }
        .unwrap_or_else(|| Watch::Thread(spawn_waiter(Arc::clone(&group))));
        Ok(Self { group, watch })
    }

    /// Whether the exit is noticed through a pidfd (rather than a waiter thread).
    #[cfg(test)]
    pub(crate) fn uses_pidfd(&self) -> bool {
        #[cfg(target_os = "linux")]
        if let Watch::Pidfd(_) = self.watch {
            return true;
        }
        false
    }

    /// Signals the whole group, unless the leader was already reaped.
    pub(crate) fn signal(&self, signal: Signal) {
        self.group.signal(signal);
    }

    /// Waits until the leader exits, kills the rest of its group, reaps the leader.
    ///
    /// Cancel-safe: dropping the future before it completes loses nothing, a new call
    /// continues. Once it has returned, the leader is reaped and it must not be called again.
    pub(crate) async fn wait(&mut self) -> Reaped {
        let result = match &mut self.watch {
            #[cfg(target_os = "linux")]
            Watch::Pidfd(fd) => loop {
                let mut ready = fd.readable().await?;
                // A pidfd is readable only once the process exited; checked anyway, because the
                // next step kills the group, leader included. (An error returns early: the
                // leader is then left to `Drop`, which reaps it unless someone else did.)
                if self.group.leader_exited()? {
                    break self.group.kill_rest_and_reap();
                }
                ready.clear_ready();
            },
            Watch::Thread(rx) => rx
                .await
                .unwrap_or_else(|_| Err(io::Error::other("the process waiter stopped"))),
            Watch::Done => Err(io::Error::other("the process was already reaped")),
        };
        // Drops the pidfd (deregistering it) now rather than with the leader.
        self.watch = Watch::Done;
        result
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.group.signal(Signal::KILL);
        #[cfg(target_os = "linux")]
        if let Watch::Pidfd(_) = self.watch {
            // Nobody awaits the pidfd any more: a thread reaps the leader once it died.
            drop(spawn_waiter(Arc::clone(&self.group)));
        }
    }
}

/// Set when `pidfd_open` does not exist (Linux before 5.3), so it is not tried again.
#[cfg(target_os = "linux")]
static NO_PIDFD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A pidfd of `pid` registered with the reactor, or `None` if the system cannot give one.
#[cfg(target_os = "linux")]
fn pidfd_watch(pid: Pid) -> Option<Watch> {
    use std::sync::atomic::Ordering;

    if NO_PIDFD.load(Ordering::Relaxed) {
        return None;
    }
    // Close-on-exec. The pid is ours and unreaped, so the pidfd is certainly the child's.
    let registered = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .inspect_err(|e| {
            if *e == rustix::io::Errno::NOSYS {
                NO_PIDFD.store(true, Ordering::Relaxed);
            }
        })
        .map_err(io::Error::from)
        .and_then(sys::register_readable);
    match registered {
        Ok(fd) => Some(Watch::Pidfd(fd)),
        Err(e) => {
            let pid = pid.as_raw_nonzero().get();
            tracing::debug!(pid, error = %e, "no pidfd for the process, using a waiter thread");
            None
        }
    }
}

/// No pidfds here.
#[cfg(not(target_os = "linux"))]
fn pidfd_watch(_pid: Pid) -> Option<Watch> {
    None
}

/// Starts the blocking waiter of `group` on a thread of its own. Falls back to tokio's blocking
/// pool if no thread can be made (and there is a runtime).
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
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(wait)),
            Err(_) => tracing::warn!("cannot start a thread to reap a child process"),
        }
    }
    rx
}

/// The waiter only makes a few system calls.
const WAITER_STACK: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::os::unix::process::CommandExt;

    use super::*;

    /// A leader reaped by someone else (an embedding program that ignores SIGCHLD, say) marks
    /// the group reaped, so that nothing ever signals a group id the kernel may reuse.
    #[test]
    fn a_leader_reaped_elsewhere_is_never_signalled() {
        let mut child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = Pid::from_raw(child.id() as i32).unwrap();
        let group = Group {
            pgid,
            reaped: Mutex::new(false),
        };
        child.wait().unwrap();
        let err = group.leader_exited().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
        assert!(*group.reaped.lock().unwrap());
        group.signal(Signal::KILL); // a no-op now
    }
}
