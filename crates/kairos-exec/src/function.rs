//! `function` tasks: Rust handlers registered by a program that embeds Kairos.
//!
//! A handler runs inside the attempt's future; a panic is caught and becomes an `Error` outcome.
//! On timeout or cancel the handler's [`FunctionCall::cancel`] token is cancelled first (the
//! cooperative equivalent of SIGTERM); a handler still running after the kill grace is aborted at
//! its next `.await` (the equivalent of SIGKILL). A handler that blocks a thread without awaiting
//! cannot be stopped this way; keep handlers async.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::FutureExt;

use kairos_core::run::{AttemptOutcome, AttemptStatus};
use kairos_core::spec::FunctionTask;
use tokio_util::sync::CancellationToken;

use crate::output::OutputBuffer;
use crate::process::to_std;
use crate::{ExecRequest, RunContext};

/// What a handler receives.
#[derive(Debug, Clone)]
pub struct FunctionCall {
    /// The task's `args`.
    pub args: serde_json::Value,
    pub context: RunContext,
    /// Cancelled when the attempt times out or is cancelled; stop soon after.
    pub cancel: CancellationToken,
    /// The attempt's output; see [`FunctionCall::log`].
    pub output: Arc<OutputBuffer>,
}

impl FunctionCall {
    /// Writes a timestamped line to the attempt's output (stream `function`).
    pub fn log(&self, text: &str) {
        self.output.push_stream_line("function", text);
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;
type Handler = Arc<dyn Fn(FunctionCall) -> BoxFuture + Send + Sync + 'static>;

/// Named handlers for `function` tasks. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    handlers: Arc<RwLock<HashMap<String, Handler>>>,
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names = self.names();
        names.sort();
        f.debug_struct("FunctionRegistry")
            .field("names", &names)
            .finish()
    }
}

impl FunctionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under `name`, replacing an earlier handler of that name.
    /// `Err(message)` from the handler fails the attempt with that message.
    pub fn register<F, Fut>(&self, name: &str, handler: F)
    where
        F: Fn(FunctionCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |call| Box::pin(handler(call)) as BoxFuture);
        self.write().insert(name.to_owned(), handler);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Registered names, in no particular order.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Option<Handler> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Handler>> {
        self.handlers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Handler>> {
        self.handlers.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs a `function` task to its end.
pub(crate) async fn run(
    registry: &FunctionRegistry,
    task: &FunctionTask,
    req: &ExecRequest,
) -> AttemptOutcome {
    let Some(handler) = registry.get(&task.name) else {
        return AttemptOutcome::error(format!("no function registered as `{}`", task.name));
    };
    let call_cancel = req.cancel.child_token();
    let call = FunctionCall {
        args: task.args.clone(),
        context: req.context.clone(),
        cancel: call_cancel.clone(),
        output: Arc::clone(&req.output),
    };
    // The handler runs inside this future (not a task of its own: one less spawn and wake-up
    // per attempt); a panic is caught and reported, and dropping this future drops it.
    // A handler that panics before returning its future is caught too.
    let future = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(call))) {
        Ok(future) => future,
        Err(payload) => return finished(&task.name, Err(payload)),
    };
    let call = std::panic::AssertUnwindSafe(future).catch_unwind();
    tokio::pin!(call);

    let timeout = async {
        match req.timeout {
            Some(t) => tokio::time::sleep(to_std(t)).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        biased;
        result = &mut call => return finished(&task.name, result),
        _ = timeout => AttemptStatus::TimedOut,
        _ = req.cancel.cancelled() => AttemptStatus::Cancelled,
    };
    call_cancel.cancel();
    let grace = async {
        if !req.kill.is_cancelled() {
            tokio::select! {
                _ = tokio::time::sleep(to_std(req.kill_grace)) => {}
                _ = req.kill.cancelled() => {}
            }
        }
    };
    tokio::select! {
        biased;
        _ = &mut call => {}
        _ = grace => {
            // Returning drops the handler's future: it is aborted.
            req.output.push_stream_line(
                "kairos",
                &format!("function `{}` ignored cancellation for {:#}: aborted", task.name, req.kill_grace),
            );
        }
    }
    AttemptOutcome::from_status(status)
}

fn finished(
    name: &str,
    result: Result<Result<(), String>, Box<dyn std::any::Any + Send>>,
) -> AttemptOutcome {
    match result {
        Ok(Ok(())) => AttemptOutcome::from_status(AttemptStatus::Succeeded),
        Ok(Err(message)) => AttemptOutcome::error(message),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            AttemptOutcome::error(format!("function `{name}` panicked: {message}"))
        }
    }
}
