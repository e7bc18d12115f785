//! Starting a task or hook process.
//!
//! Everything the child needs is prepared first, in ordinary code ([`prepare`]): NUL-terminated
//! argv and environment, the working directory, and the paths to try for `argv[0]`, looked up in
//! the `PATH` of the *child's* environment (`/bin:/usr/bin` if it has none) the way `execvp`
//! does. The child itself then only makes system calls.
//!
//! On Linux, [`Spawner`] starts the child with `clone(CLONE_VM | CLONE_VFORK)` (see
//! [`crate::vfork`]): the child borrows the server's memory until it calls `execve`, so starting
//! it costs the same however large the server is. A `fork` would copy the server's page tables
//! and fault in copy-on-write pages for every process. Other Unix systems use std's `Command`
//! with a `pre_exec` hook (a full `fork`), without the parent death signal.
//!
//! Either way the child leads a new session and process group, gets `PR_SET_PDEATHSIG(SIGKILL)`
//! on Linux, has stdin from `/dev/null` and stdout and stderr into pipes, and inherits no other
//! file descriptor (everything Kairos and std open is close-on-exec; on Linux the child also
//! closes any other). An error before `exec` comes back as the `io::Error` of its errno, as with
//! std, so that the attempt's error reads like `cannot start `x`: No such file or directory
//! (os error 2)`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::{fmt, io};

#[cfg(target_os = "linux")]
pub(crate) use crate::vfork::Spawner;
#[cfg(not(target_os = "linux"))]
pub(crate) use fork::Spawner;

/// The search path when the child's environment has no `PATH` (glibc's `execvp` default).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// What to start.
pub(crate) struct ChildSpec<'a> {
    /// Program and arguments; `argv[0]` is looked up in the child's `PATH` unless it has a `/`.
    pub argv: &'a [&'a str],
    /// The child's whole environment.
    pub env: BTreeMap<OsString, OsString>,
    /// Working directory; the server's when `None`.
    pub cwd: Option<&'a str>,
    /// Cgroups to join, limits and identity, applied by the child before `exec`.
    pub restrictions: crate::sys::Restrictions,
}

/// A [`ChildSpec`] in the form the child uses; built before the spawner thread is involved.
pub(crate) struct Prepared {
    /// Paths to `execve` in order: `argv[0]` itself if it contains a `/`, else one per `PATH`
    /// entry (an empty entry means the working directory, as in `execvp`).
    #[cfg_attr(
        not(target_os = "linux"),
        allow(dead_code, reason = "std looks up the path")
    )]
    pub candidates: Vec<CString>,
    /// Never empty.
    pub argv: Vec<CString>,
    /// `KEY=VALUE` entries.
    pub envp: Vec<CString>,
    pub cwd: Option<CString>,
    pub restrictions: crate::sys::Restrictions,
}

/// Shows no environment values: they may be secrets.
impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("candidates", &self.candidates)
            .field("argv", &self.argv)
            .field("env_vars", &self.envp.len())
            .field("cwd", &self.cwd)
            .field("restrictions", &self.restrictions)
            .finish()
    }
}

/// A started child: its pid (also its session and process group id) and the read ends of its
/// stdout and stderr pipes (close-on-exec, blocking).
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Converts `spec` for the child. Fails like std does on an empty program (`ENOENT`) or a NUL
/// byte in any string (`InvalidInput`).
pub(crate) fn prepare(spec: ChildSpec<'_>) -> io::Result<Prepared> {
    let Some(&program) = spec.argv.first() else {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    };
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let argv = spec
        .argv
        .iter()
        .map(|arg| c_string(arg.as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    let path = spec.env.get(OsStr::new("PATH")).map(|p| p.as_bytes());
    let candidates = program_candidates(program.as_bytes(), path)
        .into_iter()
        .map(c_string)
        .collect::<io::Result<Vec<_>>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(key, value)| {
            let mut entry = Vec::with_capacity(key.len() + value.len() + 1);
            entry.extend_from_slice(key.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(entry)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = spec
        .cwd
        .map(|cwd| c_string(cwd.as_bytes().to_vec()))
        .transpose()?;
    Ok(Prepared {
        candidates,
        argv,
        envp,
        cwd,
        restrictions: spec.restrictions,
    })
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// The paths `execvp` tries for `program` with search path `path` (`None`: unset).
fn program_candidates(program: &[u8], path: Option<&[u8]>) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(|b| *b == b':')
        .map(|dir| {
            if dir.is_empty() {
                return program.to_vec();
            }
            let mut candidate = Vec::with_capacity(dir.len() + 1 + program.len());
            candidate.extend_from_slice(dir);
            if !dir.ends_with(b"/") {
                candidate.push(b'/');
            }
            candidate.extend_from_slice(program);
            candidate
        })
        .collect()
}

/// The portable path: std's `Command` with a `pre_exec` hook, which makes std `fork`. Used where
/// `clone` is not available; built in tests on Linux too, so that it keeps compiling and working.
#[cfg(any(not(target_os = "linux"), test))]
pub(crate) mod fork {
    use std::ffi::OsStr;
    use std::io;
    use std::os::fd::OwnedFd;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Stdio};

    use super::{Prepared, Spawned};
    use crate::sys;

    pub(crate) struct Spawner;

    impl Spawner {
        pub(crate) fn new() -> io::Result<Self> {
            Ok(Self)
        }

        pub(crate) fn spawn(&mut self, child: &Prepared) -> io::Result<Spawned> {
            let os = |s: &std::ffi::CString| OsStr::from_bytes(s.as_bytes()).to_owned();
            let (program, args) = child
                .argv
                .split_first()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            let mut cmd = Command::new(os(program));
            cmd.args(args.iter().map(os))
                .env_clear()
                .envs(child.envp.iter().filter_map(|entry| {
                    let entry = entry.as_bytes();
                    let eq = entry.iter().position(|b| *b == b'=')?;
                    Some((
                        OsStr::from_bytes(&entry[..eq]),
                        OsStr::from_bytes(&entry[eq + 1..]),
                    ))
                }))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(cwd) = &child.cwd {
                cmd.current_dir(os(cwd));
            }
            sys::isolate(&mut cmd, child.restrictions.try_clone()?);
            let mut started = cmd.spawn()?;
            let pipes = (started.stdout.take(), started.stderr.take());
            // Dropping a std `Child` neither kills nor reaps it; the caller's waiter reaps it.
            let pid = started.id() as i32;
            match pipes {
                (Some(stdout), Some(stderr)) => Ok(Spawned {
                    pid,
                    stdout: OwnedFd::from(stdout),
                    stderr: OwnedFd::from(stderr),
                }),
                _ => Err(io::Error::other("std did not return the output pipes")),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
        program_candidates(program.as_bytes(), path.map(str::as_bytes))
            .into_iter()
            .map(|c| String::from_utf8(c).unwrap())
            .collect()
    }

    #[test]
    fn a_program_with_a_slash_is_used_as_is() {
        assert_eq!(candidates("/bin/true", Some("/usr/bin")), ["/bin/true"]);
        assert_eq!(candidates("./run.sh", Some("/usr/bin")), ["./run.sh"]);
        assert_eq!(candidates("bin/run", None), ["bin/run"]);
    }

    #[test]
    fn a_bare_name_is_looked_up_in_each_path_entry_in_order() {
        assert_eq!(
            candidates("echo", Some("/opt/x/bin:/usr/bin/")),
            ["/opt/x/bin/echo", "/usr/bin/echo"]
        );
        // Empty entries (leading, trailing, doubled) mean the working directory.
        assert_eq!(
            candidates("tool", Some(":/a::/b:")),
            ["tool", "/a/tool", "tool", "/b/tool", "tool"]
        );
        assert_eq!(candidates("tool", Some("")), ["tool"]);
    }

    #[test]
    fn without_path_the_default_search_path_is_used() {
        assert_eq!(candidates("sh", None), ["/bin/sh", "/usr/bin/sh"]);
    }

    #[test]
    fn prepare_builds_the_environment_and_rejects_nul_bytes() {
        let env: BTreeMap<OsString, OsString> = [("A".into(), "1=2".into())].into();
        let prepared = prepare(ChildSpec {
            argv: &["prog", "arg"],
            env: env.clone(),
            cwd: Some("/tmp"),
            restrictions: Default::default(),
        })
        .unwrap();
        assert_eq!(prepared.envp, [c"A=1=2"]);
        assert_eq!(prepared.argv, [c"prog", c"arg"]);
        assert_eq!(prepared.candidates, [c"/bin/prog", c"/usr/bin/prog"]);
        assert_eq!(prepared.cwd.as_deref(), Some(c"/tmp"));
        assert!(!format!("{prepared:?}").contains("1=2"), "{prepared:?}");

        let err = prepare(ChildSpec {
            argv: &["prog", "a\0b"],
            env,
            cwd: None,
            restrictions: Default::default(),
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn an_empty_program_is_not_found() {
        for argv in [&[][..], &[""][..]] {
            let err = prepare(ChildSpec {
                argv,
                env: BTreeMap::new(),
                cwd: None,
                restrictions: Default::default(),
            })
            .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        }
    }
}

/// Both ways of starting a child, run side by side on Linux: they must agree.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
pub(crate) mod spawner_tests {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::sys::{self, ExitKind};

    pub(crate) type Spawn = Box<dyn FnMut(&Prepared) -> io::Result<Spawned>>;

    pub(crate) fn spawners() -> Vec<(&'static str, Spawn)> {
        let mut fork = fork::Spawner::new().unwrap();
        let mut main = Spawner::new().unwrap();
        vec![
            ("main", Box::new(move |child| main.spawn(child))),
            ("fork", Box::new(move |child| fork.spawn(child))),
        ]
    }

    pub(crate) struct Ran {
        pub exit: ExitKind,
        pub stdout: String,
    }

    pub(crate) fn run(
        spawn: &mut Spawn,
        argv: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&str>,
    ) -> io::Result<Ran> {
        let env = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        let child = spawn(&prepare(ChildSpec {
            argv,
            env,
            cwd,
            restrictions: Default::default(),
        })?)?;
        let mut stdout = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut stdout)
            .unwrap();
        drop(child.stderr);
        let (exit, _) = sys::wait4(child.pid).unwrap();
        Ok(Ran { exit, stdout })
    }

    fn errno(result: io::Result<Ran>) -> Option<i32> {
        result.err().and_then(|e| e.raw_os_error())
    }

    fn write_file(dir: &tempfile::TempDir, name: &str, content: &str, mode: u32) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn exec_errors_come_back_with_their_errno() {
        let dir = tempfile::tempdir().unwrap();
        let plain = write_file(&dir, "plain", "#!/bin/sh\necho no\n", 0o644);
        let only_dir = dir.path().to_str().unwrap();
        let no_path = [("PATH", "/nonexistent/a:/nonexistent/b")];
        let dir_path = [("PATH", only_dir)];
        for (name, mut spawn) in spawners() {
            let mut errno_of = |argv: &[&str], env: &[(&str, &str)], cwd: Option<&str>| {
                errno(run(&mut spawn, argv, env, cwd))
            };
            assert_eq!(
                errno_of(&["/nonexistent/prog"], &[], None),
                Some(libc::ENOENT),
                "{name}"
            );
            assert_eq!(errno_of(&[&plain], &[], None), Some(libc::EACCES), "{name}");
            assert_eq!(
                errno_of(&[only_dir], &[], None),
                Some(libc::EACCES),
                "{name}"
            );
            assert_eq!(
                errno_of(&["true"], &no_path, None),
                Some(libc::ENOENT),
                "{name}"
            );
            // Found in PATH but not executable: EACCES, as `execvp` reports it.
            assert_eq!(
                errno_of(&["plain"], &dir_path, None),
                Some(libc::EACCES),
                "{name}"
            );
            // A working directory that is gone by the time the child changes into it.
            let cwd = Some("/nonexistent/kairos-dir");
            assert_eq!(
                errno_of(&["/bin/true"], &[], cwd),
                Some(libc::ENOENT),
                "{name}"
            );
        }
    }

    #[test]
    fn the_program_is_looked_up_in_the_childs_path() {
        let dir = tempfile::tempdir().unwrap();
        write_file(
            &dir,
            "kairos-probe",
            "#!/bin/sh\necho probed \"$1\"\n",
            0o755,
        );
        let path = format!("/nonexistent:{}", dir.path().to_str().unwrap());
        for (name, mut spawn) in spawners() {
            let ran = run(&mut spawn, &["kairos-probe", "x"], &[("PATH", &path)], None).unwrap();
            assert_eq!(
                (ran.exit, ran.stdout.as_str()),
                (ExitKind::Code(0), "probed x\n"),
                "{name}"
            );
        }
    }

    #[test]
    fn a_script_without_interpreter_line_runs_with_sh() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_file(&dir, "script", "echo \"from sh: $0 $1\"\nexit 3\n", 0o755);
        for (name, mut spawn) in spawners() {
            let ran = run(&mut spawn, &[&script, "arg"], &[], None).unwrap();
            assert_eq!(ran.exit, ExitKind::Code(3), "{name}");
            assert_eq!(ran.stdout, format!("from sh: {script} arg\n"), "{name}");
        }
    }

    #[test]
    fn the_child_gets_argv_env_cwd_and_a_session_of_its_own() {
        let script = r#"read -r pid comm state ppid pgrp sid rest < /proc/$$/stat
echo "$0|$1|$A|$(pwd)|$((pid == pgrp && pid == sid))""#;
        for (name, mut spawn) in spawners() {
            let argv = ["/bin/sh", "-c", script, "zero", "one"];
            let ran = run(&mut spawn, &argv, &[("A", "a=1")], Some("/tmp")).unwrap();
            assert_eq!(ran.stdout, "zero|one|a=1|/tmp|1\n", "{name}");
        }
    }
}

/// The restrictions a child applies to itself, the same with both spawners: limits by
/// `setrlimit` (the fallback without cgroups) and, as root, another user.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod restriction_tests {
    use super::spawner_tests::{Ran, spawners};
    use super::*;
    use crate::identity::Identity;
    use crate::limits::{Resource, Rlimit};
    use crate::sys::{self, ExitKind, Restrictions};

    fn run_restricted(restrictions: Restrictions, script: &str) -> Vec<Ran> {
        let mut out = Vec::new();
        for (_, mut spawn) in spawners() {
            let child = spawn(
                &prepare(ChildSpec {
                    argv: &["/bin/sh", "-c", script],
                    env: [("PATH".into(), "/usr/bin:/bin".into())].into(),
                    cwd: None,
                    restrictions: restrictions.try_clone().unwrap(),
                })
                .unwrap(),
            )
            .unwrap();
            let mut stdout = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(child.stdout), &mut stdout)
                .unwrap();
            let (exit, _) = sys::wait4(child.pid).unwrap();
            out.push(Ran { exit, stdout });
        }
        out
    }

    #[test]
    fn limits_apply_in_the_child() {
        let rlimits = [
            Rlimit {
                resource: Resource::OpenFiles,
                soft: 50,
                hard: 50,
            },
            Rlimit {
                resource: Resource::AddressSpace,
                soft: 1 << 30,
                hard: 1 << 30,
            },
            Rlimit {
                resource: Resource::CpuSeconds,
                soft: 7,
                hard: 8,
            },
        ];
        for ran in run_restricted(
            Restrictions::new(Vec::new(), &rlimits, None),
            "ulimit -n; ulimit -v; ulimit -t",
        ) {
            assert_eq!(ran.exit, ExitKind::Code(0));
            assert_eq!(ran.stdout, "50\n1048576\n7\n");
        }
    }

    #[test]
    fn another_user_as_root() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let nobody = Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            user: "nobody".into(),
            home: None,
            switch: true,
        };
        let rlimits = [Rlimit {
            resource: Resource::Processes,
            soft: 3,
            hard: 3,
        }];
        let restrictions = Restrictions::new(Vec::new(), &rlimits, Some(&nobody));
        for ran in run_restricted(
            restrictions,
            "id -u; id -g; id -G; grep -c . /proc/self/status >/dev/null && echo ok",
        ) {
            assert_eq!(ran.exit, ExitKind::Code(0), "{}", ran.stdout);
            assert_eq!(ran.stdout, "65534\n65534\n65534\nok\n");
        }
    }
}
