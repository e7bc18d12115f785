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
//! | `KAIROS_CHECKPOINT` | `checkpoint.json`: the last checkpoint an earlier attempt of the run reported | when there is one |
//! | `KAIROS_RESULT` | `result.json`, not created: the task may write one JSON document there | for every task, never for a hook |
//! | `KAIROS_CHECKPOINT_FILE` | `checkpoints.jsonl`, created empty and writable: the task appends JSON lines (`{"progress": 0.4, "message": "...", "checkpoint": {...}}`), read while it runs | for a `command` or `shell` task whose reports are taken (the worker's always are), never for a hook |
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
pub(crate) const CHECKPOINT_VAR: &str = "KAIROS_CHECKPOINT";
pub(crate) const REPORTS_VAR: &str = "KAIROS_CHECKPOINT_FILE";

const PARAMS_FILE: &str = "params.json";
const UPSTREAM_RESULTS_FILE: &str = "upstream-results.json";
const RESULT_FILE: &str = "result.json";
const EVENT_FILE: &str = "event.json";
const UPSTREAM_RESULT_FILE: &str = "upstream-result.json";
const CHECKPOINT_FILE: &str = "checkpoint.json";
const REPORTS_FILE: &str = "checkpoints.jsonl";

/// How often a running task's checkpoint file is read.
pub(crate) const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Longest line of a checkpoint file (a checkpoint of 64 KiB and the rest of its line).
const MAX_REPORT_LINE: usize = MAX_RESULT_BYTES + 4096;
/// Most bytes read from a checkpoint file at once.
const REPORT_READ: usize = 1 << 20;
/// Longest `message` kept.
const MAX_REPORT_MESSAGE: usize = 1024;

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
    /// The process has a checkpoint file (a task whose reports someone takes).
    takes_reports: bool,
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
    takes_reports: bool,
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
        (
            CHECKPOINT_VAR,
            CHECKPOINT_FILE,
            context.checkpoint.as_deref(),
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
        takes_reports,
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
        if self.takes_reports {
            files.push((REPORTS_VAR, REPORTS_FILE));
        }
        files
            .into_iter()
            .map(|(var, file)| (var, self.path.join(file).into_os_string()))
            .collect()
    }

    /// Writes the input files, then gives the directory to the task's user.
    fn fill(&mut self, inputs: &[(&'static str, &'static str, &str)]) -> Result<(), String> {
        for &(var, file, content) in inputs {
            self.write_input(file, content, READ_ONLY)
                .map_err(|e| format!("{file}: {e}"))?;
            self.inputs.push((var, file));
        }
        // The task's checkpoint file: empty, and the task's to write.
        if self.takes_reports {
            self.write_input(REPORTS_FILE, "", Mode::RUSR | Mode::WUSR)
                .map_err(|e| format!("{REPORTS_FILE}: {e}"))?;
        }
        // Last, once nothing more is made in it.
        if self.owner.chown {
            chown(&self.dir, self.owner).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn write_input(&self, file: &str, content: &str, mode: Mode) -> io::Result<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(&self.dir, file, flags | OFlags::CLOEXEC, mode)?;
        let mut file = File::from(fd);
        file.write_all(content.as_bytes())?;
        // The mode asked for at creation is subject to the umask.
        rustix::fs::fchmod(&file, mode)?;
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

/// Reads a task's checkpoint file from a duplicate of its directory's descriptor, so that it
/// can be read on a blocking thread while the directory stays with the attempt.
pub(crate) struct ReportReader {
    dir: OwnedFd,
    owner: Owner,
    /// Bytes of the file consumed so far.
    offset: u64,
    /// The file they were read from (device, inode): a file put in its place (written and
    /// renamed) is read from its start.
    file: Option<(u64, u64)>,
    /// Set once the file cannot be read any more (replaced by something else): nothing more
    /// is read, and it is said once.
    given_up: bool,
}

impl ExchangeDir {
    /// A reader of the task's checkpoint file (`None` for a hook, or if the descriptor cannot
    /// be duplicated).
    pub(crate) fn report_reader(&self) -> Option<ReportReader> {
        if !self.takes_reports {
            return None;
        }
        let dir = rustix::io::fcntl_dupfd_cloexec(&self.dir, 0).ok()?;
        Some(ReportReader {
            dir,
            owner: self.owner,
            offset: 0,
            file: None,
            given_up: false,
        })
    }
}

impl ReportReader {
    /// The complete lines appended since the last read, as reports, and notes on the lines
    /// that are not reports (for the attempt's output). Blocking. The file is checked as the
    /// result is (a regular file of the task's user, never followed through a link), read
    /// through the directory's descriptor, at most [`REPORT_READ`] bytes at a time.
    pub(crate) fn read(&mut self) -> (Vec<crate::TaskReport>, Vec<String>) {
        if self.given_up {
            return (vec![], vec![]);
        }
        match self.read_lines() {
            Ok(read) => read,
            Err(problem) => {
                self.given_up = true;
                (
                    vec![],
                    vec![format!("{REPORTS_VAR}: {problem}; not read any more")],
                )
            }
        }
    }

    fn read_lines(&mut self) -> Result<(Vec<crate::TaskReport>, Vec<String>), String> {
        let stat = match rustix::fs::statat(&self.dir, REPORTS_FILE, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Ok((vec![], vec![])),
            Err(e) => return Err(format!("cannot read {REPORTS_FILE}: {e}")),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind != FileType::RegularFile {
            return Err(format!("{REPORTS_FILE} is {}", kind_name(kind)));
        }
        if stat.st_uid != self.owner.uid {
            return Err(format!("{REPORTS_FILE} is not the task's user's"));
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(
            &self.dir,
            REPORTS_FILE,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok((vec![], vec![])),
            Err(e) => return Err(format!("cannot read {REPORTS_FILE}: {e}")),
        };
        let stat =
            rustix::fs::fstat(&fd).map_err(|e| format!("cannot read {REPORTS_FILE}: {e}"))?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind != FileType::RegularFile || stat.st_uid != self.owner.uid {
            return Err(format!("{REPORTS_FILE} was replaced"));
        }
        let identity = (stat.st_dev, stat.st_ino);
        if self.file.is_some_and(|f| f != identity) {
            self.offset = 0;
        }
        self.file = Some(identity);
        let len = u64::try_from(stat.st_size).unwrap_or(0);
        if len < self.offset {
            // Truncated and written again: read it from its start.
            self.offset = 0;
        }
        let available = usize::try_from(len - self.offset)
            .unwrap_or(usize::MAX)
            .min(REPORT_READ);
        if available == 0 {
            return Ok((vec![], vec![]));
        }
        let mut buf = vec![0u8; available];
        let mut filled = 0;
        while filled < available {
            match rustix::io::pread(&fd, &mut buf[filled..], self.offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(format!("cannot read {REPORTS_FILE}: {e}")),
            }
        }
        buf.truncate(filled);
        let mut reports = Vec::new();
        let mut notes = Vec::new();
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            // No complete line yet; one that will never fit is skipped.
            if buf.len() >= MAX_REPORT_LINE {
                self.offset += buf.len() as u64;
                notes.push(format!(
                    "{REPORTS_VAR}: a line longer than {MAX_REPORT_LINE} bytes was skipped"
                ));
            }
            return Ok((reports, notes));
        };
        self.offset += end as u64 + 1;
        for line in buf[..end].split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_report(line) {
                Ok(report) => reports.push(report),
                Err(problem) => notes.push(format!("{REPORTS_VAR}: {problem}; line skipped")),
            }
        }
        Ok((reports, notes))
    }
}

/// One line of a checkpoint file: a JSON object with `progress` (a number from 0 to 1),
/// `message` (a string) and `checkpoint` (any JSON but `null`, at most 64 KiB), each optional.
pub fn parse_report(line: &[u8]) -> Result<crate::TaskReport, String> {
    if line.len() > MAX_REPORT_LINE {
        return Err(format!("a line is longer than {MAX_REPORT_LINE} bytes"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Some(fields) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    let progress = match fields.get("progress") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => match p.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Some(p),
            _ => return Err("`progress` must be a number from 0 to 1".into()),
        },
    };
    let message = match fields.get("message") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(m)) => {
            Some(m.chars().take(MAX_REPORT_MESSAGE).collect::<String>())
        }
        Some(_) => return Err("`message` must be a string".into()),
    };
    let checkpoint = match fields.get("checkpoint") {
        None | Some(serde_json::Value::Null) => None,
        Some(c) => {
            let text = c.to_string();
            if text.len() > MAX_RESULT_BYTES {
                return Err(format!(
                    "`checkpoint` is {} bytes as JSON; at most {MAX_RESULT_BYTES}",
                    text.len()
                ));
            }
            Some(text)
        }
    };
    Ok(crate::TaskReport {
        progress,
        message,
        checkpoint,
    })
}

/// Reads a running task's checkpoint file every [`REPORT_EVERY`] on a blocking thread and
/// sends what it reports; notes on bad lines go to the attempt's output.
pub(crate) struct Reporter {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    pub(crate) fn spawn(
        mut reader: ReportReader,
        sink: crate::ReportSink,
        output: std::sync::Arc<OutputBuffer>,
    ) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let last = tokio::select! {
                    () = stopped.cancelled() => true,
                    () = tokio::time::sleep(REPORT_EVERY) => false,
                };
                let Ok((back, (reports, notes))) = tokio::task::spawn_blocking(move || {
                    let read = reader.read();
                    (reader, read)
                })
                .await
                else {
                    return;
                };
                reader = back;
                for note in &notes {
                    output.push_stream_line("kairos", note);
                }
                for report in reports {
                    let _ = sink.send(report);
                }
                if last {
                    return;
                }
            }
        });
        Self { stop, task }
    }

    /// Reads what the task wrote last, then stops (waiting at most [`SETTLE_LIMIT`]).
    pub(crate) async fn finish(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(SETTLE_LIMIT, self.task).await;
    }
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
            checkpoint: None,
            run_token: None,
            api_url: None,
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
    fn checkpoint_lines_are_read_as_they_are_completed() {
        use std::io::Write as _;
        let base = tempfile::tempdir().unwrap();
        let ctx = RunContext {
            checkpoint: Some(r#"{"offset":1}"#.into()),
            ..context(None, None)
        };
        let exchange = create(base.path(), &ctx, me(), true, true)
            .unwrap()
            .unwrap();
        let vars = exchange.vars();
        assert_eq!(
            std::fs::read_to_string(var(&vars, CHECKPOINT_VAR)).unwrap(),
            r#"{"offset":1}"#
        );
        let file = var(&vars, REPORTS_VAR).to_owned();
        let mut reader = exchange.report_reader().unwrap();
        assert_eq!(reader.read(), (vec![], vec![]));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        let lines = concat!(
            r#"{"progress":0.5,"checkpoint":{"k":2}}"#,
            "\noops\n",
            r#"{"message":"par"#
        );
        f.write_all(lines.as_bytes()).unwrap();
        let (reports, notes) = reader.read();
        assert_eq!(
            reports,
            [crate::TaskReport {
                progress: Some(0.5),
                message: None,
                checkpoint: Some(r#"{"k":2}"#.into()),
            }]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        // The partial line completes.
        writeln!(f, r#"tial"}}"#).unwrap();
        let (reports, _) = reader.read();
        assert_eq!(reports[0].message.as_deref(), Some("partial"));
        // Written anew and renamed into place: read from its start.
        let fresh = file.with_extension("new");
        // Longer than what was read of the old file: only its identity tells them apart.
        let line = format!("{{\"progress\":0.9,\"message\":\"{}\"}}\n", "m".repeat(200));
        std::fs::write(&fresh, line).unwrap();
        std::fs::rename(&fresh, &file).unwrap();
        let (reports, notes) = reader.read();
        assert_eq!(reports.len(), 1, "{notes:?}");
        assert_eq!(reports[0].progress, Some(0.9));
        // Replaced by a symbolic link: not followed, not read again.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
        let (reports, notes) = reader.read();
        assert!(reports.is_empty());
        assert!(notes[0].contains("not read any more"), "{notes:?}");
        assert_eq!(reader.read(), (vec![], vec![]));
    }

    #[test]
    fn report_lines_are_checked() {
        assert!(parse_report(br#"{"progress": 1.5}"#).is_err());
        assert!(parse_report(br#"{"progress": "half"}"#).is_err());
        assert!(parse_report(br#"{"message": 3}"#).is_err());
        assert!(parse_report(b"[1]").is_err());
        let big = format!(r#"{{"checkpoint": "{}"}}"#, "x".repeat(MAX_RESULT_BYTES));
        assert!(parse_report(big.as_bytes()).is_err());
        let ok = parse_report(br#"{"progress": 0, "message": "m", "checkpoint": null}"#).unwrap();
        assert_eq!(ok.progress, Some(0.0));
        assert_eq!(ok.checkpoint, None, "null is no checkpoint");
    }

    #[test]
    fn a_hook_without_inputs_gets_no_directory() {
        let base = tempfile::tempdir().unwrap();
        let made = create(base.path(), &context(None, None), me(), false, false).unwrap();
        assert!(made.is_none());
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
    }

    #[test]
    fn inputs_are_private_read_only_files_and_the_directory_goes_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let ctx = context(Some(r#"{"a":1}"#), Some(r#"{"up":null}"#));
        let exchange = create(base.path(), &ctx, me(), true, true)
            .unwrap()
            .unwrap();
        let vars = exchange.vars();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let names: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [PARAMS_VAR, UPSTREAM_RESULTS_VAR, RESULT_VAR, REPORTS_VAR]
        );
        assert_eq!(mode(var(&vars, REPORTS_VAR)), 0o600, "the task writes it");
        let params = var(&vars, PARAMS_VAR);
        assert_eq!(std::fs::read_to_string(params).unwrap(), r#"{"a":1}"#);
        let upstream = var(&vars, UPSTREAM_RESULTS_VAR);
        assert_eq!(std::fs::read_to_string(upstream).unwrap(), r#"{"up":null}"#);
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
        let exchange = create(base.path(), &context(None, None), owner, true, false)
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
        let exchange = create(base.path(), &context(None, None), me(), true, false)
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
