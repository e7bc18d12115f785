//! Data exchange between a process and Kairos through files: the run's parameters, the results
//! of a workflow step's upstream steps, and the task's own result.
//!
//! # Model
//!
//! Each task process, and each hook process with something to read, gets a private directory
//! of its own in the server's temp directory (`kairos-<run>-<attempt>-<random>`), made while the
//! process is prepared and removed once it ended. Its variables:
//!
//! | variable | names | set |
//! | --- | --- | --- |
//! | `KAIROS_PARAMS` | `params.json`: the JSON object a manual trigger gave the run | when the run has params |
//! | `KAIROS_UPSTREAM_RESULTS` | `upstream-results.json`: `{"<step>": <its result or null>, ...}` | for a workflow step with upstream steps |
//! | `KAIROS_EVENT` | `event.json`: the payload of the event the run is for | when an event created the run |
//! | `KAIROS_UPSTREAM_RESULT` | `upstream-result.json`: the result of the run whose end created this one | for a dependency's run whose upstream run wrote a result |
//! | `KAIROS_RESULT` | `result.json`, not created: the task may write one JSON document there | for every task, never for a hook |
//!
//! Hooks read the same inputs (from their own directory) but get no `KAIROS_RESULT`: the
//! attempt's result is the task's alone. The input files are read-only (mode 0400), the
//! directory is 0700; with `run_as` both belong to the task's user, so that it can read the
//! inputs and create `result.json`.
//!
//! After the task ended, however it ended, `result.json` is read if it is there: at most
//! [`MAX_RESULT_BYTES`], valid JSON (kept in the outcome as compact JSON text).
//!
//! # Invariants
//!
//! - **Nothing planted is followed.** The directory is made with `mkdir` under a random name
//!   (`mkdir` refuses any existing path, symbolic links included), opened with `O_NOFOLLOW` and
//!   checked to be the server's own; the input files are made in it with `O_EXCL|O_NOFOLLOW`
//!   before it is given to a `run_as` user. The result is opened through the directory's file
//!   descriptor (renaming or replacing the directory changes nothing) with
//!   `O_NOFOLLOW|O_NONBLOCK`, and only a regular file owned by the task's user is read: a
//!   symbolic link, FIFO, device, directory or someone else's file (a hard link) is refused
//!   (checked before it is opened, and again on the opened file) and none of it is read.
//! - **The directory does not outlive its process.** It is removed once the process ended, and
//!   the attempt waits for that; on every other path (an error before the start, a timeout
//!   while preparing, a dropped attempt) the guard's drop removes it on a blocking thread.
//!   `remove_dir_all` removes symbolic links the task left in it, never what they point to.
//! - **File system work runs on blocking threads**, never on the runtime's: the directory is
//!   made during the process's preparation, and the result is read and the directory removed
//!   on a blocking thread, waited for at most [`SETTLE_LIMIT`].
//!
//! # Failure handling
//!
//! | what happened | outcome |
//! | --- | --- |
//! | the directory or an input file cannot be made | `Error` before the process starts |
//! | no `result.json` | no result |
//! | `result.json` larger than 64 KiB, not valid JSON, not a regular file, not the task's, unreadable | a succeeded attempt becomes `Error` ("KAIROS_RESULT: ..."), keeping its exit code and output; any other keeps its status and drops the result, with a `kairos` line saying why |
//! | a result that is valid | kept in the outcome, whatever the status |

use std::ffi::OsString;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kairos_core::run::{AttemptOutcome, AttemptStatus, MAX_RESULT_BYTES};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::output::OutputBuffer;
use crate::{RunContext, env};

pub(crate) const PARAMS_VAR: &str = "KAIROS_PARAMS";
pub(crate) const UPSTREAM_RESULTS_VAR: &str = "KAIROS_UPSTREAM_RESULTS";
pub(crate) const RESULT_VAR: &str = "KAIROS_RESULT";
pub(crate) const EVENT_VAR: &str = "KAIROS_EVENT";
pub(crate) const UPSTREAM_RESULT_VAR: &str = "KAIROS_UPSTREAM_RESULT";

const PARAMS_FILE: &str = "params.json";
const UPSTREAM_RESULTS_FILE: &str = "upstream-results.json";
const RESULT_FILE: &str = "result.json";
const EVENT_FILE: &str = "event.json";
const UPSTREAM_RESULT_FILE: &str = "upstream-result.json";

/// Longest wait, after the process ended, for its result to be read and its directory removed
/// (on a stuck file system the blocking thread is left behind).
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Names tried before giving up when the random name is taken.
const NAME_TRIES: usize = 8;

/// Who the directory and its input files belong to: the process's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The process runs as another user than the server (a root server with `run_as`): the
    /// directory and its files are given to it.
    pub chown: bool,
}

/// A process's exchange directory; removed when dropped (see the module's invariants).
#[derive(Debug)]
pub(crate) struct ExchangeDir {
    path: PathBuf,
    /// The directory itself: files are made and read through it, never through `path`.
    dir: OwnedFd,
    owner: Owner,
    /// The input files written, with their variables.
    inputs: Vec<(&'static str, &'static str)>,
    /// The process may leave a result (a task, not a hook).
    takes_result: bool,
    removed: bool,
}

/// Makes the exchange directory for a process of `context`'s attempt in `base` (the temp
/// directory), with its input files, for `owner`. `None` when the process has nothing to
/// exchange (a hook of a run with no params, upstream results or event). Blocking. `Err` is the
/// attempt's error message.
pub(crate) fn create(
    base: &Path,
    context: &RunContext,
    owner: Owner,
    takes_result: bool,
) -> Result<Option<ExchangeDir>, String> {
    let inputs: Vec<(&'static str, &'static str, &str)> = [
        (PARAMS_VAR, PARAMS_FILE, context.params.as_deref()),
        (
            UPSTREAM_RESULTS_VAR,
            UPSTREAM_RESULTS_FILE,
            context.upstream_results.as_deref(),
        ),
        (
            EVENT_VAR,
            EVENT_FILE,
            context.event.as_ref().map(|e| e.payload.as_str()),
        ),
        (
            UPSTREAM_RESULT_VAR,
            UPSTREAM_RESULT_FILE,
            context.upstream_result.as_deref(),
        ),
    ]
    .into_iter()
    .filter_map(|(var, file, content)| content.map(|c| (var, file, c)))
    .collect();
    if inputs.is_empty() && !takes_result {
        return Ok(None);
    }
    let cannot = |e: &dyn std::fmt::Display| {
        format!(
            "cannot make the exchange directory in `{}`: {e}",
            base.display()
        )
    };
    let (path, dir) = make_private_dir(base, context).map_err(|e| cannot(&e))?;
    let mut exchange = ExchangeDir {
        path,
        dir,
        owner,
        inputs: Vec::new(),
        takes_result,
        removed: false,
    };
    match exchange.fill(&inputs) {
        Ok(()) => Ok(Some(exchange)),
        Err(e) => {
            exchange.discard();
            Err(cannot(&e))
        }
    }
}

impl ExchangeDir {
    /// `KAIROS_PARAMS`, `KAIROS_UPSTREAM_RESULTS`, `KAIROS_EVENT` and `KAIROS_RESULT`, as far as
    /// they apply.
    pub(crate) fn vars(&self) -> Vec<(&'static str, OsString)> {
        let mut files = self.inputs.clone();
        if self.takes_result {
            files.push((RESULT_VAR, RESULT_FILE));
        }
        files
            .into_iter()
            .map(|(var, file)| (var, self.path.join(file).into_os_string()))
            .collect()
    }

    /// Writes the input files, then gives the directory to the task's user.
    fn fill(&mut self, inputs: &[(&'static str, &'static str, &str)]) -> Result<(), String> {
        for &(var, file, content) in inputs {
            self.write_input(file, content)
                .map_err(|e| format!("{file}: {e}"))?;
            self.inputs.push((var, file));
        }
        // Last, once nothing more is made in it.
        if self.owner.chown {
            chown(&self.dir, self.owner).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn write_input(&self, file: &str, content: &str) -> io::Result<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(&self.dir, file, flags | OFlags::CLOEXEC, READ_ONLY)?;
        let mut file = File::from(fd);
        file.write_all(content.as_bytes())?;
        // The mode asked for at creation is subject to the umask.
        rustix::fs::fchmod(&file, READ_ONLY)?;
        if self.owner.chown {
            chown(&file, self.owner)?;
        }
        Ok(())
    }

    /// The task's result: `None` without `result.json`, `Err` why it cannot be used (never
    /// with any of its content). Blocking.
    pub(crate) fn read_result(&self) -> Result<Option<String>, String> {
        // A first look without opening anything: opening a device can act on it.
        let stat = match rustix::fs::statat(&self.dir, RESULT_FILE, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(format!("cannot read {RESULT_FILE}: {e}")),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind == FileType::Symlink {
            return Err(not_regular("a symbolic link"));
        }
        if kind != FileType::RegularFile {
            return Err(not_regular(kind_name(kind)));
        }
        self.check_owner(stat.st_uid)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(
            &self.dir,
            RESULT_FILE,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Gone or replaced since the look above (a process of the task still running).
            Err(Errno::NOENT) => return Ok(None),
            // `O_NOFOLLOW` on a symbolic link: ELOOP (Linux), EMLINK (FreeBSD).
            Err(Errno::LOOP | Errno::MLINK) => return Err(not_regular("a symbolic link")),
            Err(e) => return Err(format!("cannot read {RESULT_FILE}: {e}")),
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {RESULT_FILE}: {e}"))?;
        if let Some(what) = env::not_regular(&meta) {
            return Err(not_regular(what));
        }
        self.check_owner(meta.uid())?;
        let limit = MAX_RESULT_BYTES as u64;
        if meta.len() > limit {
            return Err(too_large(&meta.len().to_string()));
        }
        let bytes = env::read_at_most(file, limit, &meta)
            .map_err(|e| format!("cannot read {RESULT_FILE}: {e}"))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(&format!("more than {MAX_RESULT_BYTES}")));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        Ok(Some(value.to_string()))
    }

    /// A file the task's user does not own is someone else's, linked in: never read.
    fn check_owner(&self, uid: u32) -> Result<(), String> {
        if uid == self.owner.uid {
            return Ok(());
        }
        Err(format!(
            "{RESULT_FILE} belongs to uid {uid}, not to the task's user (uid {}); not read",
            self.owner.uid
        ))
    }

    /// Removes the directory (the process never started). Blocking.
    pub(crate) fn discard(mut self) {
        self.remove();
    }

    /// Removes the directory and everything in it. Blocking.
    fn remove(&mut self) {
        self.removed = true;
        remove_dir(&self.path);
    }
}

impl Drop for ExchangeDir {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || remove_dir(&path));
            }
            // Outside a runtime (a blocking caller): here and now.
            Err(_) => remove_dir(&path),
        }
    }
}

/// Removes `path` and everything in it; symbolic links in it are removed, never followed. A
/// directory gone already is fine (a task may remove its own).
fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "cannot remove a task's exchange directory"
        ),
    }
}

/// After the process ended, however it ended: reads the result (for a task) into `outcome`
/// (see the module's failure handling) and removes the directory, on a blocking thread, waiting
/// at most [`SETTLE_LIMIT`].
pub(crate) async fn settle(
    mut exchange: ExchangeDir,
    outcome: &mut AttemptOutcome,
    output: &OutputBuffer,
) {
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let work = tokio::task::spawn_blocking(move || {
        let read = if exchange.takes_result {
            exchange.read_result()
        } else {
            Ok(None)
        };
        let _ = tx.send(read);
        exchange.remove();
    });
    let read = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(read)) => read,
        Ok(Err(_)) => Err(format!("reading {RESULT_FILE} failed")),
        Err(_) => Err(format!(
            "reading {RESULT_FILE} took longer than {}s; not read",
            SETTLE_LIMIT.as_secs()
        )),
    };
    // So that the directory is gone when the attempt ends; a removal that hangs is left to its
    // thread.
    let _ = tokio::time::timeout_at(deadline, work).await;
    apply(read, outcome, output);
}

/// Puts what was read into the outcome.
fn apply(
    read: Result<Option<String>, String>,
    outcome: &mut AttemptOutcome,
    output: &OutputBuffer,
) {
    match read {
        Ok(result) => outcome.result = result,
        Err(problem) if outcome.status.is_success() => {
            outcome.status = AttemptStatus::Error {
                message: format!("{RESULT_VAR}: {problem}"),
            };
        }
        Err(problem) => output.push_stream_line(
            "kairos",
            &format!("{RESULT_VAR}: {problem}; the result is dropped"),
        ),
    }
}

const READ_ONLY: Mode = Mode::RUSR;
const PRIVATE_DIR: Mode = Mode::RWXU;

/// Makes a new directory only the server can enter, under a name nobody could guess, and opens
/// it. A path that exists already (whatever it is) is never used.
fn make_private_dir(base: &Path, context: &RunContext) -> io::Result<(PathBuf, OwnedFd)> {
    for _ in 0..NAME_TRIES {
        let name = format!(
            "kairos-{}-{}-{:016x}",
            context.run_id,
            context.attempt,
            random_u64()
        );
        let path = base.join(name);
        match rustix::fs::mkdir(&path, PRIVATE_DIR) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
        return match open_own_dir(&path) {
            Ok(dir) => Ok((path, dir)),
            Err(e) => {
                // Only an empty directory goes (if it was swapped for something else, that is
                // not ours to remove).
                let _ = rustix::fs::unlinkat(rustix::fs::CWD, &path, AtFlags::REMOVEDIR);
                Err(e)
            }
        };
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{NAME_TRIES} random names were all taken"),
    ))
}

/// Opens the directory just made, checks it is still the server's own (in a temp directory
/// that is not sticky it could have been swapped), and makes its mode exactly 0700.
fn open_own_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&dir)?;
    if stat.st_uid != rustix::process::geteuid().as_raw()
        || FileType::from_raw_mode(stat.st_mode) != FileType::Directory
    {
        return Err(io::Error::other("it was replaced after it was made"));
    }
    rustix::fs::fchmod(&dir, PRIVATE_DIR)?;
    Ok(dir)
}

fn chown(fd: impl std::os::fd::AsFd, owner: Owner) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )?;
    Ok(())
}

/// 64 random bits: the process's random hash keys (from the operating system) over a counter.
/// Unguessable names only spare a retry; `mkdir` refusing existing paths is what keeps the
/// directory private.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "a FIFO",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Directory => "a directory",
        FileType::Socket => "a socket",
        FileType::Symlink => "a symbolic link",
        _ => "not a file",
    }
}

fn not_regular(what: &str) -> String {
    format!("{RESULT_FILE} is {what}, not a regular file; not read")
}

fn too_large(size: &str) -> String {
    format!("the result is {size} bytes; at most {MAX_RESULT_BYTES}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn context(params: Option<&str>, upstream: Option<&str>) -> RunContext {
        RunContext {
            job: "job".into(),
            namespace: "ns".into(),
            run_id: 7,
            attempt: 1,
            scheduled_for: jiff::Timestamp::UNIX_EPOCH,
            step: None,
            params: params.map(str::to_owned),
            upstream_results: upstream.map(str::to_owned),
            event: None,
            upstream_run_id: None,
            upstream_result: None,
        }
    }

    fn me() -> Owner {
        Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            chown: false,
        }
    }

    fn var<'a>(vars: &'a [(&str, OsString)], name: &str) -> &'a Path {
        Path::new(&vars.iter().find(|(n, _)| *n == name).unwrap().1)
    }

    #[test]
    fn a_hook_without_inputs_gets_no_directory() {
        let base = tempfile::tempdir().unwrap();
        let made = create(base.path(), &context(None, None), me(), false).unwrap();
        assert!(made.is_none());
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
    }

    #[test]
    fn inputs_are_private_read_only_files_and_the_directory_goes_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let ctx = context(Some(r#"{"a":1}"#), Some(r#"{"up":null}"#));
        let exchange = create(base.path(), &ctx, me(), true).unwrap().unwrap();
        let vars = exchange.vars();
        let names: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [PARAMS_VAR, UPSTREAM_RESULTS_VAR, RESULT_VAR]);
        let params = var(&vars, PARAMS_VAR);
        assert_eq!(std::fs::read_to_string(params).unwrap(), r#"{"a":1}"#);
        let upstream = var(&vars, UPSTREAM_RESULTS_VAR);
        assert_eq!(std::fs::read_to_string(upstream).unwrap(), r#"{"up":null}"#);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(params), 0o400);
        let dir = params.parent().unwrap().to_owned();
        assert_eq!(mode(&dir), 0o700);
        assert!(!var(&vars, RESULT_VAR).exists());
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("kairos-7-1-"), "{name}");
        drop(exchange);
        assert!(!dir.exists());
    }

    #[test]
    fn a_result_written_by_someone_else_is_not_read() {
        let base = tempfile::tempdir().unwrap();
        let owner = Owner {
            uid: me().uid.wrapping_add(1),
            ..me()
        };
        let exchange = create(base.path(), &context(None, None), owner, true)
            .unwrap()
            .unwrap();
        let vars = exchange.vars();
        std::fs::write(var(&vars, RESULT_VAR), r#"{"secret":"value"}"#).unwrap();
        let err = exchange.read_result().unwrap_err();
        assert!(err.contains("not to the task's user"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn results_are_checked_and_normalized() {
        let base = tempfile::tempdir().unwrap();
        let exchange = create(base.path(), &context(None, None), me(), true)
            .unwrap()
            .unwrap();
        let vars = exchange.vars();
        let result = var(&vars, RESULT_VAR);
        assert_eq!(exchange.read_result(), Ok(None));
        std::fs::write(result, "{ \"rows\": [1, 2] }\n").unwrap();
        assert_eq!(exchange.read_result(), Ok(Some(r#"{"rows":[1,2]}"#.into())));
        std::fs::write(result, "{ nope").unwrap();
        let err = exchange.read_result().unwrap_err();
        assert!(err.starts_with("not valid JSON: "), "{err}");
        let at_limit = format!("\"{}\"", "x".repeat(MAX_RESULT_BYTES - 2));
        std::fs::write(result, &at_limit).unwrap();
        assert_eq!(exchange.read_result(), Ok(Some(at_limit)));
        std::fs::write(result, "1".repeat(MAX_RESULT_BYTES + 1)).unwrap();
        assert_eq!(
            exchange.read_result(),
            Err("the result is 65537 bytes; at most 65536".into())
        );
    }

    #[test]
    fn apply_fails_only_a_successful_attempt() {
        let output = OutputBuffer::default();
        let mut ok = AttemptOutcome {
            exit_code: Some(0),
            ..AttemptOutcome::from_status(AttemptStatus::Succeeded)
        };
        apply(Err("not valid JSON: x".into()), &mut ok, &output);
        assert_eq!(
            ok.status,
            AttemptStatus::Error {
                message: "KAIROS_RESULT: not valid JSON: x".into()
            }
        );
        assert_eq!(ok.exit_code, Some(0));
        let mut failed = AttemptOutcome::from_status(AttemptStatus::ExitCode { code: 2 });
        apply(Err("not valid JSON: x".into()), &mut failed, &output);
        assert_eq!(failed.status, AttemptStatus::ExitCode { code: 2 });
        assert!(
            output
                .snapshot()
                .contains("kairos KAIROS_RESULT: not valid JSON: x; the result is dropped")
        );
    }
}
