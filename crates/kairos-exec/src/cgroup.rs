//! Per-task cgroups, where Kairos can make them (Linux).
//!
//! Each command or hook process gets a cgroup of its own, for three things a process group
//! cannot give:
//! - **Limits that hold for the whole task**: `memory` (the kernel's OOM killer ends the task,
//!   not the node) and `processes` (a fork bomb stops at the limit).
//! - **The task's own memory use**: the cgroup's peak. `wait4`'s `ru_maxrss` cannot say it: a
//!   child started from the server counts the server's pages until `exec`, so a `true` task
//!   "used" the server's 68 MiB.
//! - **Every process of the task**, also those that left its process group (`setsid`, daemons):
//!   they are killed with the task.
//!
//! # Where
//!
//! Detected once per process, from `/proc/self/cgroup` and `/proc/self/mountinfo`:
//! - **cgroup v2** with the `memory` and `pids` controllers available to the server's cgroup
//!   `S`: tasks go under `S/kairos-tasks/`. The v2 rule that a cgroup with processes cannot
//!   enable controllers for its children means the server first moves itself into
//!   `S/kairos-server/` (as a service with systemd's `Delegate=yes` is expected to do).
//! - **cgroup v1**, the `memory` and `pids` hierarchies: tasks go under `kairos-tasks/` in the
//!   server's cgroup of each.
//! - Otherwise none: limits fall back to `setrlimit` (see `crate::limits`), and the memory use
//!   is not reported.
//!
//! Everything here does blocking file system calls: callers run it on a blocking thread.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory under the server's cgroup holding the tasks' cgroups.
const TASKS_DIR: &str = "kairos-tasks";
/// Where a cgroup v2 server moves itself so that its cgroup may delegate controllers.
const SERVER_DIR: &str = "kairos-server";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// A directory under which task cgroups are made, and what they control there.
#[derive(Debug, Clone)]
struct Parent {
    dir: PathBuf,
    version: Version,
    memory: bool,
    pids: bool,
}

/// Where task cgroups go on this machine.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    parents: Vec<Parent>,
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns task cgroups off (before the first [`setup`]).
pub(crate) fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// The setup, found on first use; `Err` says why there is none.
pub(crate) fn setup() -> &'static Result<Setup, String> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    SETUP.get_or_init(|| {
        let found = if DISABLED.load(Ordering::Relaxed) {
            Err("turned off (task_cgroups = false)".to_owned())
        } else {
            detect()
        };
        match &found {
            Ok(setup) => tracing::info!(
                parents = ?setup.parents.iter().map(|p| p.dir.display().to_string()).collect::<Vec<_>>(),
                "tasks run in cgroups of their own"
            ),
            Err(why) => tracing::info!(
                reason = %why,
                "tasks run without cgroups: memory and process limits use setrlimit, and task memory is not reported"
            ),
        }
        found
    })
}

impl Setup {
    pub(crate) fn has_memory(&self) -> bool {
        self.parents.iter().any(|p| p.memory)
    }

    pub(crate) fn has_pids(&self) -> bool {
        self.parents.iter().any(|p| p.pids)
    }

    pub(crate) fn version(&self) -> Version {
        self.parents.first().map_or(Version::V1, |p| p.version)
    }
}

/// A mounted cgroup hierarchy: its mount point, the cgroup path at that mount point's root,
/// and (v1) its controllers.
#[derive(Debug)]
struct Mount {
    point: PathBuf,
    root: String,
    version: Version,
    controllers: Vec<String>,
}

fn mounts() -> io::Result<Vec<Mount>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        // `id parent dev root point options [optional...] - fstype source superoptions`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let version = match *fstype {
            "cgroup2" => Version::V2,
            "cgroup" => Version::V1,
            _ => continue,
        };
        let controllers = tail
            .get(2)
            .map(|o| o.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        out.push(Mount {
            point: PathBuf::from(unescape(point)),
            root: unescape(root),
            version,
            controllers,
        });
    }
    Ok(out)
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let code = d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(code).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` (as in `/proc/self/cgroup`) in `mount`, if the mount shows it:
/// the mount's root must hold the path (component by component), and a path that climbs out
/// (`..`, from another cgroup namespace) is none.
fn dir_in(mount: &Mount, path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return None;
    }
    let relative = path.strip_prefix(&mount.root).ok()?;
    Some(mount.point.join(relative))
}

fn detect() -> Result<Setup, String> {
    let memberships = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mounts = mounts().map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mut v2_path = None;
    let mut v1_paths: Vec<(Vec<String>, String)> = Vec::new();
    for line in memberships.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2_path = Some(path.to_owned());
        } else {
            v1_paths.push((
                controllers.split(',').map(str::to_owned).collect(),
                path.to_owned(),
            ));
        }
    }
    let mut reasons = Vec::new();
    if let Some(path) = &v2_path {
        let own = mounts
            .iter()
            .filter(|m| m.version == Version::V2)
            .find_map(|m| dir_in(m, path));
        match own.map(|own| setup_v2(&own)) {
            Some(Ok(parent)) => {
                return Ok(Setup {
                    parents: vec![parent],
                });
            }
            Some(Err(why)) => reasons.push(format!("cgroup v2: {why}")),
            None => reasons.push(format!("cgroup v2: no mount shows {path}")),
        }
    }
    let mut parents = Vec::new();
    for controller in ["memory", "pids"] {
        let found = v1_paths
            .iter()
            .find(|(cs, _)| cs.iter().any(|c| c == controller))
            .and_then(|(_, path)| {
                mounts
                    .iter()
                    .filter(|m| {
                        m.version == Version::V1 && m.controllers.iter().any(|c| c == controller)
                    })
                    .find_map(|m| dir_in(m, path))
                    .map(|dir| dir.join(TASKS_DIR))
            });
        let Some(dir) = found else {
            reasons.push(format!("no cgroup v1 `{controller}` hierarchy"));
            continue;
        };
        match fs::create_dir_all(&dir) {
            Ok(()) => {
                clean_stale(&dir);
                parents.push(Parent {
                    dir,
                    version: Version::V1,
                    memory: controller == "memory",
                    pids: controller == "pids",
                });
            }
            Err(e) => reasons.push(format!("cannot create {}: {e}", dir.display())),
        }
    }
    if parents.is_empty() {
        return Err(reasons.join("; "));
    }
    Ok(Setup { parents })
}

/// Sets up `S/kairos-tasks` with the memory and pids controllers under the server's cgroup
/// directory `own`.
fn setup_v2(own: &Path) -> Result<Parent, String> {
    let available = fs::read_to_string(own.join("cgroup.controllers"))
        .map_err(|e| format!("cannot read {}: {e}", own.display()))?;
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    if !(has("memory") && has("pids")) {
        return Err(format!(
            "the memory and pids controllers are not available in {} (it offers: {})",
            own.display(),
            available.trim()
        ));
    }
    let enable = |dir: &Path| write_file(&dir.join("cgroup.subtree_control"), "+memory +pids");
    if enable(own).is_err() {
        // Processes in `own` keep it from delegating: move the server (all its threads) into
        // a leaf of its own first.
        let server = own.join(SERVER_DIR);
        fs::create_dir_all(&server)
            .map_err(|e| format!("cannot create {}: {e}", server.display()))?;
        write_file(
            &server.join("cgroup.procs"),
            &std::process::id().to_string(),
        )
        .map_err(|e| format!("cannot move the server into {}: {e}", server.display()))?;
        enable(own).map_err(|e| format!("cannot enable controllers in {}: {e}", own.display()))?;
    }
    let tasks = own.join(TASKS_DIR);
    fs::create_dir_all(&tasks).map_err(|e| format!("cannot create {}: {e}", tasks.display()))?;
    enable(&tasks).map_err(|e| format!("cannot enable controllers in {}: {e}", tasks.display()))?;
    clean_stale(&tasks);
    Ok(Parent {
        dir: tasks,
        version: Version::V2,
        memory: true,
        pids: true,
    })
}

/// Removes task cgroups that servers no longer running left behind, killing what still runs in
/// them. Several servers may share a parent (nodes started from one shell), and a
/// live server's cgroup is empty for a moment before its task joins it, so a cgroup whose
/// server (the pid in its name) still runs is left alone.
fn clean_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let server = name
            .to_str()
            .and_then(|n| n.rsplit('-').nth(1))
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = server.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            // Processes of a node that died (kill -9) outlive it when they were not its direct
            // children: they end now. A cgroup they take a moment to leave goes at the next start.
            kill_members(&entry.path());
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Kills every process in the cgroup `dir`: `cgroup.kill` where the kernel has it (v2, 5.14),
/// else each pid it lists.
fn kill_members(dir: &Path) {
    if write_file(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    if let Ok(pids) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

fn write_file(path: &Path, content: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(content.as_bytes())
}

/// Limits written into a task's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CgroupLimits {
    pub memory_bytes: Option<u64>,
    pub processes: Option<u64>,
}

/// One task's cgroup (one directory per hierarchy).
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    dirs: Vec<(PathBuf, Version, bool)>,
}

impl TaskCgroup {
    /// Makes the cgroup `name`-N with `limits`. Each limit is written where its controller is.
    /// On error nothing is left behind. The notes say what the limits do not cover.
    pub(crate) fn create(
        setup: &Setup,
        name: &str,
        limits: CgroupLimits,
    ) -> io::Result<(Self, Vec<String>)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cgroup = Self { dirs: Vec::new() };
        let mut notes = Vec::new();
        let made = (|| {
            for parent in &setup.parents {
                let dir = parent.dir.join(&unique);
                fs::create_dir(&dir)?;
                cgroup
                    .dirs
                    .push((dir.clone(), parent.version, parent.memory));
                if parent.memory
                    && let Some(bytes) = limits.memory_bytes
                {
                    let (limit, swap, swap_value) = match parent.version {
                        Version::V2 => ("memory.max", "memory.swap.max", "0".to_owned()),
                        Version::V1 => (
                            "memory.limit_in_bytes",
                            "memory.memsw.limit_in_bytes",
                            bytes.to_string(),
                        ),
                    };
                    write_file(&dir.join(limit), &bytes.to_string())?;
                    // Else the limit would only move memory to swap.
                    if write_file(&dir.join(swap), &swap_value).is_err() {
                        notes.push(
                            "the memory limit does not cover swap (no swap accounting here)"
                                .to_owned(),
                        );
                    }
                }
                if parent.pids
                    && let Some(n) = limits.processes
                {
                    write_file(&dir.join("pids.max"), &n.to_string())?;
                }
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok((cgroup, notes)),
            Err(e) => {
                let _ = cgroup.try_remove();
                Err(e)
            }
        }
    }

    /// `cgroup.procs` of each directory, open for writing: the child writes `0` into each to
    /// join the task's cgroup before it drops privileges and calls `exec`.
    pub(crate) fn procs_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|(dir, _, _)| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    /// The most memory the task used at once, in KiB (`None` without the memory controller, or
    /// on a kernel without `memory.peak`).
    pub(crate) fn peak_kib(&self) -> Option<i64> {
        let (dir, version, _) = self.dirs.iter().find(|(_, _, memory)| *memory)?;
        let file = match version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        };
        let bytes: i64 = fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(bytes / 1024)
    }

    /// Whether the kernel killed a process of the task for its memory limit.
    pub(crate) fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|(dir, version, memory)| {
            if !memory {
                return false;
            }
            let file = match version {
                Version::V2 => "memory.events",
                Version::V1 => "memory.oom_control",
            };
            fs::read_to_string(dir.join(file)).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.strip_prefix("oom_kill ")
                        .is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
                })
            })
        })
    }

    /// [`TaskCgroup::kill_all`] to run elsewhere (on a blocking thread).
    pub(crate) fn killer(&self) -> impl FnOnce() + Send + 'static {
        let dirs: Vec<PathBuf> = self.dirs.iter().map(|(dir, _, _)| dir.clone()).collect();
        move || dirs.iter().for_each(|dir| kill_members(dir))
    }

    /// Kills every process still in the cgroup (those that left the task's process group).
    pub(crate) fn kill_all(&self) {
        for (dir, _, _) in &self.dirs {
            kill_members(dir);
        }
    }

    /// Removes the directories (`rmdir` refuses a cgroup that still has processes: kill them
    /// with [`TaskCgroup::kill_all`] and try again). True when none is left.
    pub(crate) fn try_remove(&self) -> bool {
        self.dirs
            .iter()
            .all(|(dir, _, _)| match fs::remove_dir(dir) {
                Ok(()) => true,
                Err(e) => e.kind() == io::ErrorKind::NotFound,
            })
    }
}

/// A task's cgroup that is cleaned up when dropped, however the attempt ended: what is left in
/// it is killed and the directories removed, on a blocking thread, retrying while the killed
/// processes exit.
#[derive(Debug)]
pub(crate) struct CgroupGuard(Option<TaskCgroup>);

impl CgroupGuard {
    pub(crate) fn new(cgroup: TaskCgroup) -> Self {
        Self(Some(cgroup))
    }

    pub(crate) fn get(&self) -> Option<&TaskCgroup> {
        self.0.as_ref()
    }

    /// After the task: its peak memory (KiB) and whether the kernel killed a process of it for
    /// its memory limit; then what is left of it is killed and the cgroup removed (in the
    /// background if its processes take a moment to go). Blocking.
    pub(crate) fn finish(mut self) -> (Option<i64>, bool) {
        let Some(cgroup) = self.0.take() else {
            return (None, false);
        };
        let found = (cgroup.peak_kib(), cgroup.oom_killed());
        cgroup.kill_all();
        if !cgroup.try_remove() {
            self.0 = Some(cgroup);
        }
        found
    }
}

/// Tries to remove the cgroup for this long before leaving it (an empty one is removed at the
/// next start).
const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// Pause between tries while killed processes leave the cgroup.
const REMOVE_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// Kills what is left in `cgroup` and removes it, retrying while the killed processes exit:
/// each try on a blocking thread, the pauses on the runtime's timer.
async fn clean_up(cgroup: TaskCgroup) {
    let mut cgroup = Some(cgroup);
    let deadline = tokio::time::Instant::now() + REMOVE_PATIENCE;
    while let Some(task) = cgroup.take() {
        let tried = tokio::task::spawn_blocking(move || {
            task.kill_all();
            (!task.try_remove()).then_some(task)
        })
        .await;
        match tried {
            Ok(Some(task)) if tokio::time::Instant::now() < deadline => {
                cgroup = Some(task);
                tokio::time::sleep(REMOVE_RETRY).await;
            }
            Ok(Some(task)) => {
                tracing::warn!(dirs = ?task.dirs, "a task's cgroup could not be removed");
            }
            Ok(None) | Err(_) => {}
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let Some(cgroup) = self.0.take() else {
            return;
        };
        // At once, in case the runtime is shutting down and the clean-up below never runs.
        cgroup.kill_all();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(clean_up(cgroup));
            }
            // Outside a runtime there is nothing to wait with: one try.
            Err(_) => {
                cgroup.kill_all();
                let _ = cgroup.try_remove();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// Nodes started from one shell share a parent: one starting up must not remove another's
    /// cgroup in the moment it is empty, before its task joins it.
    #[test]
    fn only_cgroups_of_servers_that_are_gone_are_cleaned() {
        let parent = tempfile::tempdir().unwrap();
        let live = format!("run-1-1-{}-0", std::process::id());
        let gone = "run-1-1-4194999-7";
        for name in [live.as_str(), gone, "odd-name"] {
            fs::create_dir(parent.path().join(name)).unwrap();
        }
        clean_stale(parent.path());
        assert!(parent.path().join(&live).exists());
        assert!(!parent.path().join(gone).exists());
        assert!(!parent.path().join("odd-name").exists());
    }

    /// A node killed with -9 leaves the grandchildren of its tasks running in their cgroups; the
    /// next node to start ends them.
    #[test]
    fn a_dead_nodes_leftover_processes_are_killed() {
        let Ok(setup) = setup() else { return };
        let parent = &setup.parents[0].dir;
        let dir = parent.join("run-9-9-4194999-0");
        fs::create_dir(&dir).unwrap();
        let mut survivor = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        write_file(&dir.join("cgroup.procs"), &survivor.id().to_string()).unwrap();
        clean_stale(parent);
        let status = survivor.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        // Gone now, or at the next start once the killed process has left.
        clean_stale(parent);
        assert!(!dir.exists());
    }

    #[test]
    fn cgroup_paths_are_found_in_their_mount_only() {
        let mount = Mount {
            point: PathBuf::from("/sys/fs/cgroup/memory"),
            root: "/process_api".into(),
            version: Version::V1,
            controllers: vec!["memory".into()],
        };
        assert_eq!(
            dir_in(&mount, "/process_api/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/abc"))
        );
        assert_eq!(dir_in(&mount, "/process_apiX/abc"), None);
        assert_eq!(dir_in(&mount, "/process_api/../etc"), None);
        let root = Mount {
            root: "/".into(),
            ..mount
        };
        assert_eq!(
            dir_in(&root, "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/sys/fs/cgroup/a\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape(r"/x\"), r"/x\");
        assert_eq!(unescape("/é\\1"), "/é\\1");
    }
}
