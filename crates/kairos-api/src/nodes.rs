//! `GET /api/v1/nodes`: the nodes of the cluster, which one leads, and in which term.

use axum::Json;
use axum::extract::{Query, State};
use jiff::Timestamp;
use kairos_core::auth::Role;
use serde::Serialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::NoQuery;

/// One node, as it last reported itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeDto {
    /// Fresh at every start of the process.
    pub id: String,
    pub name: String,
    /// Where its API listens.
    pub address: Option<String>,
    pub version: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat: Timestamp,
    /// It holds the leadership (fires triggers, rescues runs) and its term has not expired.
    pub leader: bool,
    /// The term it leads (only on the leader).
    pub term: Option<i64>,
    /// Attempts running on it at its last heartbeat.
    pub running_attempts: u32,
    /// The node answering this request.
    pub this_node: bool,
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, description = "The nodes of the cluster by name", body = Vec<NodeDto>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<Vec<NodeDto>>, ApiError> {
    caller.require(Role::Viewer)?;
    let store = &app.ctx.store;
    let (nodes, leader) = tokio::try_join!(store.node_list(), store.leader_get())?;
    // The leader's own clock rules its lease; this node's is close enough for a display.
    let now = app.ctx.clock.now();
    let leader = leader.filter(|l| l.expires_at > now);
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| {
                let term = leader
                    .as_ref()
                    .filter(|l| l.node_id == n.id)
                    .map(|l| l.term);
                NodeDto {
                    this_node: n.id == app.ctx.node_id,
                    leader: term.is_some(),
                    term,
                    running_attempts: n.running,
                    id: n.id,
                    name: n.name,
                    address: n.address,
                    version: n.version,
                    started_at: n.started_at,
                    last_heartbeat: n.last_heartbeat,
                }
            })
            .collect(),
    ))
}
