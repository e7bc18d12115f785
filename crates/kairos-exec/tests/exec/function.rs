//! `function` tasks: registered handlers, errors, panics, timeouts and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::SignedDuration;
use kairos_core::run::AttemptStatus;
use kairos_core::spec::{FunctionTask, TaskSpec};
use kairos_exec::{ExecRequest, Executor, FunctionRegistry, TaskExecutor};

use crate::support::*;

fn function(name: &str, args: serde_json::Value) -> ExecRequest {
    request(TaskSpec::Function(FunctionTask {
        name: name.into(),
        args,
    }))
}

fn executor(registry: &FunctionRegistry) -> TaskExecutor {
    TaskExecutor::new(registry.clone())
}

#[tokio::test]
async fn handler_gets_args_and_context_and_succeeds() {
    let registry = FunctionRegistry::new();
    registry.register("greet", |call| async move {
        let who = call.args["who"].as_str().ok_or("missing `who`")?.to_owned();
        call.log(&format!("hello {who} from run {}", call.context.run_id));
        Ok(())
    });
    assert!(registry.contains("greet") && !registry.contains("other"));
    let outcome = executor(&registry)
        .execute(function("greet", serde_json::json!({"who": "ana"})))
        .await;
    assert_eq!(outcome.status, AttemptStatus::Succeeded);
    assert_eq!(
        lines(&outcome.output, "function"),
        ["hello ana from run 42"]
    );
}

#[tokio::test]
async fn handler_error_becomes_the_message() {
    let registry = FunctionRegistry::new();
    registry.register("fail", |_call| async { Err("disk full".to_owned()) });
    let outcome = executor(&registry)
        .execute(function("fail", serde_json::Value::Null))
        .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Error {
            message: "disk full".into()
        }
    );
}

#[tokio::test]
async fn unknown_function_is_an_error() {
    let outcome = executor(&FunctionRegistry::new())
        .execute(function("missing", serde_json::Value::Null))
        .await;
    assert_eq!(
        outcome.status,
        AttemptStatus::Error {
            message: "no function registered as `missing`".into()
        }
    );
}

#[tokio::test]
async fn panic_becomes_an_error() {
    let registry = FunctionRegistry::new();
    registry.register("explode", |call| async move {
        if call.args.is_null() {
            panic!("kaboom");
        }
        Ok(())
    });
    let outcome = executor(&registry)
        .execute(function("explode", serde_json::Value::Null))
        .await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert_eq!(message, "function `explode` panicked: kaboom");
}

/// A handler that panics before it even returns its future is reported the same way.
#[tokio::test]
async fn a_panic_before_the_future_becomes_an_error() {
    let registry = FunctionRegistry::new();
    registry.register("early", |_call| -> std::future::Ready<Result<(), String>> {
        panic!("before the future")
    });
    let outcome = executor(&registry)
        .execute(function("early", serde_json::Value::Null))
        .await;
    let AttemptStatus::Error { message } = &outcome.status else {
        panic!("{outcome:?}")
    };
    assert_eq!(message, "function `early` panicked: before the future");
}

#[tokio::test]
async fn timeout_cancels_the_call_token() {
    let registry = FunctionRegistry::new();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&saw_cancel);
    registry.register("patient", move |call| {
        let flag = Arc::clone(&flag);
        async move {
            call.cancel.cancelled().await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }
    });
    let req = ExecRequest {
        timeout: Some(SignedDuration::from_millis(200)),
        ..function("patient", serde_json::Value::Null)
    };
    let outcome = executor(&registry).execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::TimedOut);
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "the handler saw its token cancelled"
    );
}

#[tokio::test]
async fn handler_ignoring_cancellation_is_aborted_after_grace() {
    let registry = FunctionRegistry::new();
    registry.register("stubborn", |_call| async {
        tokio::time::sleep(Duration::from_secs(300)).await;
        Ok(())
    });
    let req = ExecRequest {
        timeout: Some(SignedDuration::from_millis(200)),
        kill_grace: SignedDuration::from_millis(100),
        ..function("stubborn", serde_json::Value::Null)
    };
    let outcome = executor(&registry).execute(req).await;
    assert_eq!(outcome.status, AttemptStatus::TimedOut);
    assert!(outcome.output.contains("aborted"), "{}", outcome.output);
}

#[tokio::test]
async fn cancel_stops_the_handler() {
    let registry = FunctionRegistry::new();
    registry.register("forever", |call| async move {
        call.log("started");
        std::future::pending::<()>().await;
        Ok(())
    });
    let req = function("forever", serde_json::Value::Null);
    let (output, cancel) = (Arc::clone(&req.output), req.cancel.clone());
    let exec = executor(&registry);
    let running = tokio::spawn(async move { exec.execute(req).await });
    output_contains(&output, "started").await;
    cancel.cancel();
    assert_eq!(running.await.unwrap().status, AttemptStatus::Cancelled);
}
