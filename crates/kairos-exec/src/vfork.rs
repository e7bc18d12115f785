//! Linux: starts a child with `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)`, as glibc's
//! `posix_spawn` does, plus the one step `posix_spawn` cannot do: `PR_SET_PDEATHSIG`.
//!
//! # How it works
//!
//! The child runs on a stack of its own ([`ChildStack`], reused for every child) but in the
//! server's memory, and the calling thread is suspended until the child has called `execve`
//! successfully or exited. Until then the child may only make system calls: no allocation, no
//! locks, nothing that another thread of the server could be in the middle of. It reads what it
//! needs from a [`ChildArgs`] on the parent's stack, prepared in full before the clone, and
//! reports a failure by storing its errno there before `_exit(127)`; the parent reads it once
//! it resumes, reaps the child and returns the error.
//!
//! Signals: the parent blocks all signals around the clone, so no signal handler of the server
//! ever runs in the child (it would run on the child's stack, in the server's memory). The child
//! resets every caught signal to its default action, and `SIGPIPE` too (std ignores it in the
//! server; a child expects the default, as std's `Command` does), keeps ignored signals ignored,
//! and unblocks all signals just before `execve`.
//!
//! File descriptors: everything Kairos opens is close-on-exec; the child gets only its stdin
//! (`/dev/null`), stdout and stderr, `dup2`ed onto 0, 1 and 2, and closes every other
//! descriptor (`close_range`), including any the server inherited without close-on-exec.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::spawn::{Prepared, Spawned};

/// Stack of the child until `execve`: a few small frames and system calls.
const STACK_SIZE: usize = 64 * 1024;

/// The shell that runs a program `execve` refused with `ENOEXEC`, as `execvp` does.
const SHELL: &CStr = c"/bin/sh";

/// Starts children; lives on the spawner thread (see `process::spawn`).
pub(crate) struct Spawner {
    stack: ChildStack,
    /// The children's stdin, opened once.
    dev_null: OwnedFd,
    /// The highest signal number, for resetting signal actions in the child.
    max_signal: c_int,
}

impl Spawner {
    pub(crate) fn new() -> io::Result<Self> {
        let dev_null = above_stdio(std::fs::File::open("/dev/null")?.into())?;
        Ok(Self {
            stack: ChildStack::new()?,
            dev_null,
            max_signal: libc::SIGRTMAX(),
        })
    }

    /// Starts `child`. Blocks the calling thread until the child has called `execve` (or
    /// failed), which is when the suspended parent resumes.
    pub(crate) fn spawn(&mut self, child: &Prepared) -> io::Result<Spawned> {
        // `prepare` never makes an empty argv; `script_argv` below relies on it.
        if child.argv.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let (stdout, stdout_child) = pipe()?;
        let (stderr, stderr_child) = pipe()?;

        let candidates: Vec<*const c_char> = child.candidates.iter().map(|c| c.as_ptr()).collect();
        let argv = null_terminated(&child.argv);
        let envp = null_terminated(&child.envp);
        // `/bin/sh`, the program's path (filled in by the child), then argv[1..] and the null.
        let mut script_argv = Vec::with_capacity(argv.len() + 1);
        script_argv.extend([SHELL.as_ptr(), ptr::null()]);
        script_argv.extend(argv.iter().skip(1));
        let args = ChildArgs {
            candidates: &candidates,
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            script_argv: script_argv.as_mut_ptr(),
            cwd: child.cwd.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
            stdio: [
                self.dev_null.as_raw_fd(),
                stdout_child.as_raw_fd(),
                stderr_child.as_raw_fd(),
            ],
            parent: rustix::process::getpid().as_raw_nonzero().get(),
            restrictions: &child.restrictions,
            max_signal: self.max_signal,
            errno: AtomicI32::new(0),
        };

        let blocked = BlockAllSignals::new()?;
        // SAFETY: `child_main` only makes async-signal-safe system calls (see its comments) and
        // never returns. It runs on `self.stack`, which nothing else uses and which outlives the
        // call; `args` and everything it points to (`candidates`, `argv`, `envp`,
        // `script_argv`, the `CString`s of `child`, the fds) live on until after `clone`
        // returns, and with `CLONE_VFORK` the child no longer uses them by then: it has called
        // `execve` (which replaced its memory) or exited. `SIGCHLD` makes it an ordinary child
        // for `waitid`/`wait4`. All signals are blocked (`blocked`), so no handler runs in the
        // child before it resets them.
        let pid = unsafe {
            libc::clone(
                child_main,
                self.stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                ptr::from_ref(&args).cast_mut().cast::<c_void>(),
            )
        };
        let clone_error = io::Error::last_os_error();
        drop(blocked);
        // The child has its own copies as 1 and 2 (or is gone).
        drop((stdout_child, stderr_child));
        if pid == -1 {
            return Err(clone_error);
        }
        match args.errno.load(Ordering::Acquire) {
            0 => Ok(Spawned {
                pid,
                stdout,
                stderr,
            }),
            errno => {
                reap(pid);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// What the child reads (and writes: `errno`, `script_argv[1]`) while the parent waits.
struct ChildArgs<'a> {
    /// Paths to try in order, as in `execvp`.
    candidates: &'a [*const c_char],
    /// Null-terminated.
    argv: *const *const c_char,
    /// Null-terminated.
    envp: *const *const c_char,
    /// Null-terminated; slot 1 is the program's path, set by the child before use.
    script_argv: *mut *const c_char,
    /// Null: keep the server's.
    cwd: *const c_char,
    /// Becomes 0, 1 and 2; each above 2, so `dup2` always clears close-on-exec.
    stdio: [RawFd; 3],
    /// The server's pid, taken before the clone.
    parent: libc::pid_t,
    /// Cgroups, limits and identity (see `sys::restrict`).
    restrictions: &'a crate::sys::Restrictions,
    max_signal: c_int,
    /// Set by the child when it fails before `execve`.
    errno: AtomicI32,
}

/// The child. Never returns: `execve` or `_exit(127)`.
///
/// Only async-signal-safe system call wrappers from here on: the child shares the server's
/// memory, so a lock held by another thread would never be released, and allocator state must
/// not change under the server. The wrappers may set `errno`, which is the (suspended) parent
/// thread's thread-local; the parent never reads it after `clone` succeeded.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` that `Spawner::spawn` passed to `clone`, alive until
    // the child has called `execve` or exited (the parent is suspended until then).
    let args = unsafe { &*arg.cast::<ChildArgs<'_>>() };
    // SAFETY: runs only here, in the child of a `CLONE_VM | CLONE_VFORK` clone.
    let errno = unsafe { exec_child(args) };
    args.errno.store(errno, Ordering::Release);
    // SAFETY: `_exit` ends only the child (it is a process of its own) without running exit
    // handlers or destructors, which belong to the server.
    unsafe { libc::_exit(127) }
}

/// Sets up the child and calls `execve`; returns the errno of the step that failed.
///
/// # Safety
///
/// Only to be called in the child of [`Spawner::spawn`]'s clone, with all signals blocked.
unsafe fn exec_child(args: &ChildArgs<'_>) -> c_int {
    // SAFETY (whole function): every call is a plain system call wrapper (sigaction, setsid,
    // write, prlimit64, setgroups, setresgid, setresuid, prctl, getppid, dup2, close_range,
    // chdir, pthread_sigmask, execve) on pointers into `args`, which are valid and
    // NUL-terminated as built by `Spawner::spawn`, or on locals. Closing descriptors affects
    // only the child: without `CLONE_FILES` it has its own table.
    unsafe {
        reset_signal_actions(args.max_signal);
        if libc::setsid() == -1 {
            return errno();
        }
        // Before the parent death signal: a change of user clears it.
        if let Err(e) = crate::sys::restrict(args.restrictions) {
            return e;
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) == -1
        {
            return errno();
        }
        // The server may have died between the clone and prctl: then no signal will ever
        // come, so do not start at all.
        if libc::getppid() != args.parent {
            return libc::ESRCH;
        }
        for (target, &fd) in (0..).zip(&args.stdio) {
            while libc::dup2(fd, target) == -1 {
                let e = errno();
                if e != libc::EINTR {
                    return e;
                }
            }
        }
        // Descriptors the server inherited without close-on-exec (from whoever started it, or
        // opened by a C library) do not reach the task either. Best effort: before Linux 5.9
        // there is no `close_range`, and close-on-exec is all there is.
        libc::syscall(libc::SYS_close_range, 3 as c_uint, c_uint::MAX, 0 as c_uint);
        if !args.cwd.is_null() && libc::chdir(args.cwd) == -1 {
            return errno();
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        if rc != 0 {
            return rc;
        }
        exec_candidates(args)
    }
}

/// `execvp`'s search: the first candidate that `execve` accepts; `ENOEXEC` (no `#!` line) runs
/// it with `/bin/sh`; on failure, `EACCES` if any candidate gave it, else the last error.
///
/// # Safety
///
/// As for [`exec_child`].
unsafe fn exec_candidates(args: &ChildArgs<'_>) -> c_int {
    let mut denied = false;
    let mut last = libc::ENOENT;
    for &path in args.candidates {
        // SAFETY: `path`, `argv`, `envp` and `script_argv` are NUL-terminated strings and
        // null-terminated arrays of them, built by `Spawner::spawn`; `script_argv` has at least
        // three slots, and slot 1 is the child's to set.
        let err = unsafe {
            libc::execve(path, args.argv, args.envp);
            let mut err = errno();
            if err == libc::ENOEXEC {
                *args.script_argv.add(1) = path;
                libc::execve(SHELL.as_ptr(), args.script_argv.cast_const(), args.envp);
                err = errno();
            }
            err
        };
        match err {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return err,
        }
        last = err;
    }
    if denied { libc::EACCES } else { last }
}

/// Resets every caught signal, and `SIGPIPE`, to its default action.
///
/// # Safety
///
/// As for [`exec_child`].
unsafe fn reset_signal_actions(max_signal: c_int) {
    // SAFETY: `sigaction` with valid pointers to locals; a zeroed `sigaction` is a valid value
    // (`SIG_DFL`, no flags, empty mask). Signals the C library reserves for itself fail with
    // EINVAL and are left alone: it sends them only to its own threads, never to this child.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=max_signal {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, ptr::null(), &mut old) != 0 {
                continue;
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if caught || signal == libc::SIGPIPE {
                libc::sigaction(signal, &default, ptr::null_mut());
            }
        }
    }
}

fn errno() -> c_int {
    // Reads the thread-local `errno`; no allocation.
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Blocks every signal in the calling thread until dropped (then restores the previous mask).
struct BlockAllSignals(libc::sigset_t);

impl BlockAllSignals {
    fn new() -> io::Result<Self> {
        // SAFETY: `sigset_t` is plain data for which all-zero bytes are valid; the calls only
        // write to the two locals.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous) {
                0 => Ok(Self(previous)),
                rc => Err(io::Error::from_raw_os_error(rc)),
            }
        }
    }
}

impl Drop for BlockAllSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`, a valid `sigset_t`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, ptr::null_mut());
        }
    }
}

/// The child's stack: `STACK_SIZE` bytes above a guard page, mapped once per spawner.
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<Self> {
        // SAFETY: `sysconf` only reads a value.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let len = STACK_SIZE.next_multiple_of(page) + page;
        // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // The stack grows down: an overflow hits the inaccessible lowest page.
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the end of the mapping (page-aligned, so 16-byte aligned).
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is `len` bytes long.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `new`; no child runs on it once `spawn` returned.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// A close-on-exec pipe: (read end for the server, write end for the child, above 2).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe2` succeeded, so both are open descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read, above_stdio(write)?))
}

/// `fd`, or a close-on-exec duplicate numbered 3 or more if it is 0, 1 or 2 (when the server
/// runs with a standard stream closed): the child's `dup2` onto 0, 1 and 2 must neither clobber
/// another of its descriptors nor be a no-op that keeps close-on-exec set.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// Pointers to `strings` followed by a null pointer, as `execve` wants them.
fn null_terminated(strings: &[std::ffi::CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// Reaps a child that exited before `execve`.
fn reap(pid: libc::pid_t) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
    {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::spawn::spawner_tests::{Spawn, run};
    use crate::sys::ExitKind;

    fn spawner() -> Spawn {
        let mut spawner = Spawner::new().unwrap();
        Box::new(move |child| spawner.spawn(child))
    }

    /// The signals blocked in the calling thread.
    fn blocked() -> Vec<c_int> {
        // SAFETY: queries the mask into a local; `sigismember` only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, ptr::null(), &mut set);
            (1..=libc::SIGRTMAX())
                .filter(|&s| libc::sigismember(&set, s) == 1)
                .collect()
        }
    }

    /// Runs `f` with `SIGUSR2` blocked in this thread (each test runs on a thread of its own).
    fn with_sigusr2_blocked<T>(f: impl FnOnce() -> T) -> T {
        // SAFETY: changes only this thread's mask, with a valid local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
        }
        f()
    }

    fn status_mask(status: &str, field: &str) -> u64 {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    #[test]
    fn the_callers_signal_mask_is_restored() {
        with_sigusr2_blocked(|| {
            let before = blocked();
            assert!(before.contains(&libc::SIGUSR2));
            let ran = run(&mut spawner(), &["/bin/true"], &[], None).unwrap();
            assert_eq!(ran.exit, ExitKind::Code(0));
            assert_eq!(blocked(), before);
        });
    }

    #[test]
    fn the_child_has_no_blocked_signals_and_sigpipe_at_its_default() {
        let ours = std::fs::read_to_string("/proc/self/status").unwrap();
        let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
        assert_ne!(
            status_mask(&ours, "SigIgn:") & pipe_bit,
            0,
            "std ignores SIGPIPE"
        );
        let ran = with_sigusr2_blocked(|| {
            let argv = ["/bin/grep", "^Sig", "/proc/self/status"];
            run(&mut spawner(), &argv, &[], None).unwrap()
        });
        assert_eq!(status_mask(&ran.stdout, "SigBlk:"), 0, "{}", ran.stdout);
        // Ignored signals stay ignored (as with std), except SIGPIPE.
        assert_eq!(
            status_mask(&ran.stdout, "SigIgn:"),
            status_mask(&ours, "SigIgn:") & !pipe_bit,
            "{}",
            ran.stdout
        );
    }

    #[test]
    fn the_child_inherits_no_descriptor_besides_stdio() {
        // A descriptor without close-on-exec, as a careless library would leave one.
        let path = CString::new("/dev/null").unwrap();
        // SAFETY: opens a file with a valid path; the descriptor is owned right after.
        let leaky = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        assert!(leaky > 2);
        // SAFETY: `open` succeeded and nothing else owns the descriptor.
        let leaky = unsafe { OwnedFd::from_raw_fd(leaky) };
        let script = "cd /proc/self/fd && echo *";
        let ran = run(&mut spawner(), &["/bin/sh", "-c", script], &[], None).unwrap();
        // 3 is the directory the shell reads to expand `*`.
        let fds: Vec<&str> = ran.stdout.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "leaky fd: {}", leaky.as_raw_fd());
    }
}
