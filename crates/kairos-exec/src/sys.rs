//! Unsafe code besides the Linux spawn ([`crate::vfork`]): `wait4` for the exit status together
//! with the child's resource usage, the registration of a pidfd with tokio's reactor, and the
//! pre-exec hook of the portable spawn (`spawn::fork`).
#![allow(unsafe_code)]

use std::io;
#[cfg(any(not(target_os = "linux"), test))]
use std::os::unix::process::CommandExt;

use kairos_core::run::ResourceUsage;

/// How the group leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// Makes the child the leader of a new session and process group (so the whole group can be
/// signalled at once) and, on Linux, asks the kernel to SIGKILL it when its parent thread dies.
///
/// Children are forked from one long-lived thread (see `process::spawn`), because the parent
/// death signal fires when the *thread* that forked the child exits, not only the process.
///
/// Only for the portable spawn: Linux uses [`crate::vfork`] (and builds this in tests only).
#[cfg(any(not(target_os = "linux"), test))]
pub(crate) fn isolate(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    let parent = rustix::process::getpid();
    let hook = move || -> io::Result<()> {
        rustix::process::setsid()?;
        #[cfg(target_os = "linux")]
        {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl: then no signal will ever come.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe work is
    // allowed. It makes raw system calls through rustix (setsid, prctl, getppid), which do not
    // allocate or take locks, builds an `io::Error` from a raw errno (no allocation), and only
    // reads `parent`, a `Copy` value captured before the fork.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// `fd` (a pidfd) registered with tokio's reactor for readability. Must be called within a
/// runtime with IO enabled.
#[cfg(target_os = "linux")]
pub(crate) fn register_readable(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor, closed only when the `OwnedFd` is dropped,
    // and its `as_raw_fd` always returns the same number. The `AsyncFd` owns it until the
    // `AsyncFd` is dropped; the crate never replaces it through `AsyncFd::get_mut`.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    Ok(registered?)
}

/// Reaps `pid` (blocking) and returns how it ended and its resource usage.
#[allow(
    clippy::useless_conversion,
    reason = "`c_long` and `time_t` are i32 on 32-bit targets"
)]
pub(crate) fn wait4(pid: i32) -> io::Result<(ExitKind, ResourceUsage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live, writable locals of the right types for the
        // duration of the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let kind = if libc::WIFEXITED(status) {
        ExitKind::Code(libc::WEXITSTATUS(status))
    } else {
        ExitKind::Signal(libc::WTERMSIG(status))
    };
    let micros = |tv: libc::timeval| i64::from(tv.tv_sec) * 1_000_000 + i64::from(tv.tv_usec);
    let usage = ResourceUsage {
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: i64::from(usage.ru_maxrss),
        user_cpu_us: micros(usage.ru_utime),
        sys_cpu_us: micros(usage.ru_stime),
    };
    Ok((kind, usage))
}
