//! Workflow runs: starting one (its step runs) and settling it after a step changed, inside the
//! transaction of the change (see `Store::workflow_start`). Every write is fenced by the state
//! it expects, so a step that moved on meanwhile is left alone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use jiff::Timestamp;
use kairos_core::JobSpec;
use kairos_core::run::RunId;
use kairos_core::workflow::Workflow;
use kairos_store::workflow::{self, StepRow};
use kairos_store::{Run, StoreError, StoreResult, WorkflowControlParams, WorkflowStartParams};
use rusqlite::{Connection, params};

use crate::rows::{self, RUN_SELECT, all, col, exec, first, micros};

/// `workflow_start`: false when the lease was lost.
pub(crate) fn start(
    conn: &Connection,
    p: &WorkflowStartParams,
    now: Timestamp,
) -> StoreResult<bool> {
    let flow = workflow::workflow_of(&p.spec)?;
    let spec = serde_json::to_string(&p.spec).map_err(|e| StoreError::Internal(e.to_string()))?;
    let at = now;
    let now = micros(at);
    let changed = exec(
        conn,
        "UPDATE runs SET spec = ?1, lease_token = NULL, lease_expires_at = NULL, begun = 1, \
         started_at = COALESCE(started_at, ?2) \
         WHERE id = ?3 AND lease_token = ?4 AND state = 'running' AND parent_id IS NULL",
        params![spec, now, p.run_id, p.lease_token],
    )?;
    if changed != 1 {
        return Ok(false);
    }
    for step in workflow::step_inserts(&p.spec, &flow) {
        exec(
            conn,
            "INSERT INTO runs (job_id, scheduled_for, run_at, state, origin, max_attempts, \
             execution, exclusive, created_at, parent_id, step, params, event_id, event_topic, \
             event_payload, upstream_run_id) \
             SELECT job_id, scheduled_for, ?1, 'scheduled', origin, ?2, execution, 0, ?1, id, ?3, \
               params, event_id, event_topic, event_payload, upstream_run_id \
             FROM runs WHERE id = ?4",
            params![now, step.max_attempts, step.step, p.run_id],
        )?;
    }
    settle(conn, p.run_id, at)?;
    Ok(true)
}

/// A workflow run's stored document, parsed, with its DAG.
pub(crate) struct Document {
    pub spec: Arc<JobSpec>,
    pub flow: Workflow,
}

/// Most documents kept parsed (the cache is emptied when it is full).
const MAX_CACHED_DOCUMENTS: usize = 256;

thread_local! {
    /// Parsed documents by workflow run, with a hash of the text they were parsed from. Only
    /// the writer thread settles and claims, so this is its cache; an entry is used only for
    /// the same text (a start rolled back and made again with another document is parsed anew).
    static DOCUMENTS: RefCell<HashMap<RunId, (u64, Arc<Document>)>> = RefCell::new(HashMap::new());
}

/// The parsed document of workflow run `run_id` whose stored text is `text`: parsing and
/// validating a large workflow's steps for every step that ends or is claimed would cost more
/// than the rest of the transaction.
pub(crate) fn parsed(run_id: RunId, text: &str) -> StoreResult<Arc<Document>> {
    let hash = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    };
    let cached = DOCUMENTS.with(|c| {
        c.borrow()
            .get(&run_id)
            .filter(|(h, _)| *h == hash)
            .map(|(_, d)| d.clone())
    });
    if let Some(doc) = cached {
        return Ok(doc);
    }
    let spec = workflow::parse_spec(text)?;
    let flow = workflow::workflow_of(&spec)?;
    let doc = Arc::new(Document {
        spec: Arc::new(spec),
        flow,
    });
    DOCUMENTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_CACHED_DOCUMENTS {
            c.clear();
        }
        c.insert(run_id, (hash, doc.clone()));
    });
    Ok(doc)
}

/// The parsed document of a started workflow run.
pub(crate) fn document(conn: &Connection, run_id: RunId) -> StoreResult<Arc<Document>> {
    let text: String = first(
        conn,
        "SELECT spec FROM runs WHERE id = ?1 AND spec IS NOT NULL",
        [run_id],
        |r| col(r, 0),
    )?
    .ok_or_else(|| StoreError::Internal(format!("workflow run {run_id} has no document")))?;
    parsed(run_id, &text)
}

/// Applies `kairos_store::workflow::settle` to a running workflow run; nothing for a run that is
/// not one (a plain run, or one that has ended).
pub(crate) fn settle(conn: &Connection, run_id: RunId, now: Timestamp) -> StoreResult<()> {
    let parent = first(
        conn,
        "SELECT spec, cancel_requested FROM runs \
         WHERE id = ?1 AND state = 'running' AND spec IS NOT NULL",
        [run_id],
        |r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)? != 0)),
    )?;
    let Some((spec, cancelling)) = parent else {
        return Ok(());
    };
    let doc = parsed(run_id, &spec)?;
    let steps = step_rows(conn, run_id)?;
    let plan = workflow::settle(&doc.flow, &steps, cancelling)?;
    let now = micros(now);
    for id in plan.release {
        exec(
            conn,
            "UPDATE runs SET state = 'queued', run_at = ?1 WHERE id = ?2 AND state = 'scheduled'",
            params![now, id],
        )?;
    }
    for (id, state, reason) in plan.decide {
        exec(
            conn,
            "UPDATE runs SET state = ?1, reason = ?2, finished_at = ?3 \
             WHERE id = ?4 AND state = 'scheduled'",
            params![state.as_str(), reason, now, id],
        )?;
    }
    if let Some(state) = plan.finish {
        let ended = exec(
            conn,
            "UPDATE runs SET state = ?1, finished_at = ?2 WHERE id = ?3 AND state = 'running'",
            params![state.as_str(), now, run_id],
        )?;
        if ended == 1 {
            crate::dependency::run_ended(conn, run_id)?;
        }
    }
    Ok(())
}

/// Cancelling a running workflow run: its steps that have not started are cancelled, its
/// running ones asked to stop; it ends with its last running step.
pub(crate) fn cancel(conn: &Connection, run_id: RunId, now: Timestamp) -> StoreResult<()> {
    exec(
        conn,
        "UPDATE runs SET state = 'cancelled', finished_at = ?1, reason = 'cancelled' \
         WHERE parent_id = ?2 AND (state = 'scheduled' OR state = 'queued')",
        params![micros(now), run_id],
    )?;
    exec(
        conn,
        "UPDATE runs SET cancel_requested = 1 WHERE parent_id = ?1 AND state = 'running'",
        [run_id],
    )?;
    settle(conn, run_id, now)
}

/// The step runs of a workflow run, in step order.
pub(crate) fn steps(conn: &Connection, run_id: RunId) -> StoreResult<Vec<Run>> {
    all(
        conn,
        &format!("{RUN_SELECT} WHERE r.parent_id = ?1 ORDER BY r.id"),
        [run_id],
        rows::run,
    )
}

fn step_rows(conn: &Connection, run_id: RunId) -> StoreResult<Vec<StepRow>> {
    all(
        conn,
        "SELECT id, step, state FROM runs WHERE parent_id = ?1",
        [run_id],
        |r| {
            Ok(StepRow {
                id: col(r, 0)?,
                step: col(r, 1)?,
                state: col::<String>(r, 2)?.parse().map_err(StoreError::Internal)?,
            })
        },
    )
}

/// `workflow_control`: decides the action on the steps as they are, writes it fenced by each
/// step's state, reopens a run that had ended, settles it and records the change.
pub(crate) fn control(
    conn: &Connection,
    p: &WorkflowControlParams,
    at: Timestamp,
) -> StoreResult<Run> {
    let conflict = |message: String| StoreError::WorkflowConflict {
        run_id: p.run_id,
        message,
    };
    let run = crate::store::fetch_run(conn, p.run_id)?.ok_or(StoreError::RunNotFound(p.run_id))?;
    if let Some(parent) = run.parent_id {
        return Err(conflict(format!(
            "is a step of run {parent}; act on the workflow run"
        )));
    }
    let spec: Option<String> = first(
        conn,
        "SELECT spec FROM runs WHERE id = ?1",
        [p.run_id],
        |r| col(r, 0),
    )?
    .flatten();
    let Some(spec) = spec else {
        return Err(conflict(
            if run.state.is_terminal() || run.state == kairos_core::run::RunState::Running {
                "is not a workflow run".to_owned()
            } else {
                format!("is {}: its steps do not exist until it starts", run.state)
            },
        ));
    };
    if run.state == kairos_core::run::RunState::Running && run.cancel_requested {
        return Err(conflict("is being cancelled".to_owned()));
    }
    let spec = workflow::parse_spec(&spec)?;
    let steps = step_rows(conn, p.run_id)?;
    let writes = workflow::plan_control(p.run_id, &spec, &steps, &p.action, &p.actor)?;
    let now = micros(at);
    let changed_meanwhile = || conflict("its steps changed meanwhile; try again".to_owned());
    for (id, was, state, reason) in &writes.set {
        let changed = exec(
            conn,
            "UPDATE runs SET state = ?1, reason = ?2, finished_at = ?3 WHERE id = ?4 AND state = ?5",
            params![state.as_str(), reason, now, id, was.as_str()],
        )?;
        if changed != 1 {
            return Err(changed_meanwhile());
        }
    }
    let reason = format!("run again by {}", p.actor);
    for (id, was, budget) in &writes.reset {
        let changed = exec(
            conn,
            "UPDATE runs SET state = 'scheduled', max_attempts = attempt + ?1, run_at = ?2, \
             reason = ?3, exit_code = NULL, started_at = NULL, finished_at = NULL, node = NULL, \
             result = NULL, cancel_requested = 0 WHERE id = ?4 AND state = ?5",
            params![budget, now, reason, id, was.as_str()],
        )?;
        if changed != 1 {
            return Err(changed_meanwhile());
        }
    }
    if run.state.is_terminal() {
        exec(
            conn,
            "UPDATE runs SET state = 'running', finished_at = NULL, cancel_requested = 0, \
             reason = NULL WHERE id = ?1 AND state = ?2",
            params![p.run_id, run.state.as_str()],
        )?;
    }
    settle(conn, p.run_id, at)?;
    let mut change = crate::auth::Change::job(
        &p.actor,
        p.action.audit_action(),
        &run.namespace,
        &run.job_name,
    )
    .run(run.id);
    change.detail = p.action.step().map(|s| format!("step `{s}`"));
    crate::auth::audit(conn, change, at)?;
    crate::store::fetch_run(conn, p.run_id)?.ok_or(StoreError::RunNotFound(p.run_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(steps: &[&str]) -> String {
        let steps: Vec<String> = steps
            .iter()
            .map(|s| format!(r#"{{"name":"{s}","task":{{"kind":"shell","script":"true"}}}}"#))
            .collect();
        format!(r#"{{"name":"j","steps":[{}]}}"#, steps.join(","))
    }

    #[test]
    fn a_cached_document_is_used_only_for_the_same_text() {
        let first = parsed(7, &text(&["a"])).unwrap();
        assert!(Arc::ptr_eq(&first, &parsed(7, &text(&["a"])).unwrap()));
        // The same run with another document (a start rolled back, then made again).
        let second = parsed(7, &text(&["a", "b"])).unwrap();
        assert_eq!(second.flow.dag.len(), 2);
        assert!(parsed(8, "not json").is_err());
    }
}
