//! Unsafe code besides the Linux spawn ([`crate::vfork`]): `wait4` for the exit status together
//! with the child's resource usage, the registration of a pidfd with tokio's reactor, the
//! pre-exec hook of the portable spawn (`spawn::fork`), and the reaper's signal dispositions.
#![allow(unsafe_code)]

use std::io;
#[cfg(any(not(target_os = "linux"), test))]
use std::os::unix::process::CommandExt;

use kairos_core::run::ResourceUsage;

/// What a child applies to itself before `exec` (see [`restrict`]), in the form the child
/// uses: prepared in full by the parent, so the child only makes system calls.
#[derive(Debug, Default)]
pub(crate) struct Restrictions {
    /// `cgroup.procs` files of the task's cgroup, open for writing.
    pub cgroup_procs: Vec<std::os::fd::OwnedFd>,
    /// `(resource, soft, hard)` for `prlimit64`.
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    /// `(uid, gid, supplementary groups)` to switch to.
    pub identity: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

impl Restrictions {
    pub(crate) fn new(
        cgroup_procs: Vec<std::os::fd::OwnedFd>,
        rlimits: &[crate::limits::Rlimit],
        identity: Option<&crate::identity::Identity>,
    ) -> Self {
        use crate::limits::Resource;
        let rlimits = rlimits
            .iter()
            .map(|r| {
                let resource = match r.resource {
                    Resource::AddressSpace => libc::RLIMIT_AS,
                    Resource::CpuSeconds => libc::RLIMIT_CPU,
                    Resource::OpenFiles => libc::RLIMIT_NOFILE,
                    Resource::Processes => libc::RLIMIT_NPROC,
                };
                (resource as libc::c_int, r.soft, r.hard)
            })
            .collect();
        Self {
            cgroup_procs,
            rlimits,
            identity: identity
                .filter(|i| i.switch)
                .map(|i| (i.uid, i.gid, i.groups.clone())),
        }
    }
}

impl Restrictions {
    /// A copy with duplicated descriptors (for the portable spawn, whose hook owns its data).
    #[cfg(any(not(target_os = "linux"), test))]
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            cgroup_procs: self
                .cgroup_procs
                .iter()
                .map(|fd| fd.try_clone())
                .collect::<io::Result<_>>()?,
            rlimits: self.rlimits.clone(),
            identity: self.identity.clone(),
        })
    }
}

/// Elsewhere than Linux, `run_as` and limits are not supported: a child that needs them does not
/// start.
///
/// # Safety
///
/// As the Linux version.
#[cfg(not(target_os = "linux"))]
pub(crate) unsafe fn restrict(r: &Restrictions) -> Result<(), libc::c_int> {
    if r.cgroup_procs.is_empty() && r.rlimits.is_empty() && r.identity.is_none() {
        Ok(())
    } else {
        Err(libc::ENOSYS)
    }
}

// The 32-bit-id calls: on i386 and arm the plain numbers are the old 16-bit ones.
#[cfg(all(target_os = "linux", any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(all(target_os = "linux", any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid32;
#[cfg(all(target_os = "linux", any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "x86", target_arch = "arm"))
))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "x86", target_arch = "arm"))
))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid;
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "x86", target_arch = "arm"))
))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;

/// Applies `r` to the calling process: joins the task's cgroups, sets its limits, then switches
/// user and groups. Returns the errno of the step that failed.
///
/// Raw system calls only, through `syscall`: this runs in a child that may share the server's
/// memory (`crate::vfork`), where the C library's `setuid` would signal the server's threads.
/// The parent death signal is cleared by a change of credentials, so callers set it after this.
///
/// # Safety
///
/// Only in a child process before `exec`; `r` is valid for the call.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn restrict(r: &Restrictions) -> Result<(), libc::c_int> {
    use std::os::fd::AsRawFd;
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY (whole block): each call passes valid pointers to data owned by `r` (or to a
    // static byte string) with their lengths; the calls change only the calling process.
    unsafe {
        for fd in &r.cgroup_procs {
            // `0` is the writing process.
            if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(errno());
            }
        }
        for &(resource, soft, hard) in &r.rlimits {
            let limit = libc::rlimit64 {
                rlim_cur: soft,
                rlim_max: hard,
            };
            let none: *mut libc::rlimit64 = std::ptr::null_mut();
            if libc::syscall(libc::SYS_prlimit64, 0, resource, &raw const limit, none) != 0 {
                return Err(errno());
            }
        }
        if let Some((uid, gid, groups)) = &r.identity
            && (libc::syscall(SYS_SETGROUPS, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(SYS_SETRESGID, *gid, *gid, *gid) != 0
                || libc::syscall(SYS_SETRESUID, *uid, *uid, *uid) != 0)
        {
            return Err(errno());
        }
    }
    Ok(())
}

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
pub(crate) fn isolate(cmd: &mut std::process::Command, restrictions: Restrictions) {
    #[cfg(target_os = "linux")]
    let parent = rustix::process::getpid();
    let hook = move || -> io::Result<()> {
        rustix::process::setsid()?;
        // SAFETY: in the forked child before exec; `restrictions` lives in the hook.
        unsafe { restrict(&restrictions) }.map_err(io::Error::from_raw_os_error)?;
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
    // allowed. It makes raw system calls through rustix and `syscall` (setsid, write, prlimit64,
    // setgroups, setresgid, setresuid, prctl, getppid), which do not allocate or take locks,
    // builds an `io::Error` from a raw errno (no allocation), and only reads `parent` and
    // `restrictions`, captured before the fork.
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
        // Linux reports ru_maxrss in KiB, but for a child started from the server it counts
        // the server's pages until `exec`: not the task's memory. The caller fills this in from
        // the task's cgroup where there is one.
        max_rss_kib: None,
        user_cpu_us: micros(usage.ru_utime),
        sys_cpu_us: micros(usage.ru_stime),
    };
    Ok((kind, usage))
}

/// Ignores `signals` in this process (no handler is installed: the disposition is "ignore").
/// For the reaper, before it does anything else.
pub(crate) fn ignore_signals(signals: &[libc::c_int]) {
    for &signal in signals {
        // SAFETY: `SIG_IGN` installs no handler, so nothing runs in signal context.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}
