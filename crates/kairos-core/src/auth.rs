//! Who may do what: roles, namespace scopes and the rules between them. Pure; the API applies
//! them to each request and the store keeps tokens (hashed) and the audit log.
//!
//! - A **role** orders what a token may do: `viewer` reads, `operator` also changes jobs and
//!   runs, `admin` also manages tokens and reads the audit log of changes without a namespace.
//! - A **scope** says which namespaces a token sees: some, or all (`*`). A namespace outside the
//!   scope looks like one that does not exist.
//! - A token may only grant what it has: a new token's role is at most its creator's and its
//!   scope within its creator's.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::job::validate_name;

/// What a token may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads jobs, runs, output, events and the audit log of its namespaces.
    Viewer,
    /// Also creates, changes, pauses, triggers and deletes jobs, and cancels runs.
    Operator,
    /// Also manages tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "`{other}` is not a role; use `viewer`, `operator` or `admin`"
            )),
        }
    }
}

/// The namespaces a token sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every namespace (`*`).
    All,
    /// These namespaces only (never empty).
    Only(BTreeSet<String>),
}

/// Most namespaces one token may name.
pub const MAX_SCOPE_NAMESPACES: usize = 256;

impl Scope {
    /// A scope from a list of namespaces, where `*` means all. Every problem is reported.
    pub fn parse(namespaces: &[String]) -> Result<Self, String> {
        if namespaces.is_empty() {
            return Err("name at least one namespace, or `*` for all".into());
        }
        if namespaces.len() > MAX_SCOPE_NAMESPACES {
            return Err(format!(
                "at most {MAX_SCOPE_NAMESPACES} namespaces; use `*` for all"
            ));
        }
        if namespaces.iter().any(|n| n == "*") {
            return if namespaces.len() == 1 {
                Ok(Scope::All)
            } else {
                Err("`*` already means every namespace; give it alone".into())
            };
        }
        for ns in namespaces {
            validate_name(ns)?;
        }
        Ok(Scope::Only(namespaces.iter().cloned().collect()))
    }

    /// Whether `namespace` is in the scope.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(set) => set.contains(namespace),
        }
    }

    /// Whether every namespace of `other` is in this scope.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (Scope::Only(_), Scope::All) => false,
            (Scope::Only(mine), Scope::Only(theirs)) => theirs.is_subset(mine),
        }
    }

    /// The namespaces as written: `["*"]` or the sorted list.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["*".to_owned()],
            Scope::Only(set) => set.iter().cloned().collect(),
        }
    }

    /// `None` for all namespaces, else the list (for store filters).
    pub fn namespaces(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Only(set) => Some(set.iter().cloned().collect()),
        }
    }

    /// The namespaces to list when a request asks for `asked` (or for all): `Some(list)`
    /// restricts the listing (an empty list shows nothing), `None` shows everything.
    pub fn filter(&self, asked: Option<&str>) -> Option<Vec<String>> {
        match (asked, self) {
            (Some(ns), scope) if scope.allows(ns) => Some(vec![ns.to_owned()]),
            (Some(_), _) => Some(Vec::new()),
            (None, scope) => scope.namespaces(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list().join(","))
    }
}

/// Who makes a request: a token's name, role and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    /// When the token stops working (`None`: never).
    pub expires_at: Option<jiff::Timestamp>,
}

impl Principal {
    /// Whoever calls a node that runs without authentication: an admin of every namespace.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
            scope: Scope::All,
            expires_at: None,
        }
    }

    /// The CLI working on the store directly (`kairos token create --data-dir`): whoever can
    /// read the data directory is an admin already.
    pub fn offline() -> Self {
        Self {
            name: "offline".into(),
            role: Role::Admin,
            scope: Scope::All,
            expires_at: None,
        }
    }
}

/// Longest token lifetime: ten years.
pub const MAX_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 3650);

/// Parses a token lifetime: `90d` (days of 24 hours) or a duration such as `12h`; one minute to
/// ten years.
pub fn parse_lifetime(input: &str) -> Result<SignedDuration, String> {
    let input = input.trim();
    let parsed = match input.strip_suffix('d') {
        Some(days)
            if !days.is_empty() && days.len() <= 5 && days.bytes().all(|b| b.is_ascii_digit()) =>
        {
            days.parse::<i64>()
                .map(|d| SignedDuration::from_hours(d * 24))
                .map_err(|e| e.to_string())
        }
        _ if input.len() <= 64 => input
            .parse::<SignedDuration>()
            .map_err(|_| format!("`{input}` is not a lifetime; write e.g. `90d` or `12h`")),
        _ => Err("is too long; write e.g. `90d` or `12h`".into()),
    }?;
    if parsed < SignedDuration::from_mins(1) || parsed > MAX_TOKEN_LIFETIME {
        return Err(format!("`{input}` must be between 1m and 3650d"));
    }
    Ok(parsed)
}

/// Actor names Kairos uses itself in the audit log; no token may take them.
pub const RESERVED_ACTORS: [&str; 3] = ["anonymous", "system", "offline"];

/// Checks a token name: 1 to 63 characters as for job names, and not an actor name Kairos
/// writes into the audit log itself.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    validate_name(name)?;
    if RESERVED_ACTORS.contains(&name) {
        return Err(format!(
            "`{name}` is reserved: the audit log uses it for changes made without a token"
        ));
    }
    Ok(())
}

/// Whether a token with `role` and `scope` may create (or revoke) a token with `grant_role`
/// and `grant_scope`: only an admin, and only within what it has itself.
pub fn may_grant(
    role: Role,
    scope: &Scope,
    grant_role: Role,
    grant_scope: &Scope,
) -> Result<(), String> {
    if role < Role::Admin {
        return Err("only an admin token manages tokens".into());
    }
    if grant_role > role {
        return Err(format!("a {role} token cannot grant the {grant_role} role"));
    }
    if !scope.covers(grant_scope) {
        return Err(format!(
            "this token sees namespaces {scope} and cannot grant {grant_scope}"
        ));
    }
    Ok(())
}

/// What a change in the audit log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditAction {
    #[serde(rename = "job.create")]
    JobCreate,
    #[serde(rename = "job.update")]
    JobUpdate,
    #[serde(rename = "job.delete")]
    JobDelete,
    #[serde(rename = "job.pause")]
    JobPause,
    #[serde(rename = "job.resume")]
    JobResume,
    #[serde(rename = "job.trigger")]
    JobTrigger,
    #[serde(rename = "job.backfill")]
    JobBackfill,
    #[serde(rename = "run.cancel")]
    RunCancel,
    #[serde(rename = "run.skip_step")]
    RunSkipStep,
    #[serde(rename = "run.mark_step_succeeded")]
    RunMarkStepSucceeded,
    #[serde(rename = "run.rerun_step")]
    RunRerunStep,
    #[serde(rename = "run.rerun_failed")]
    RunRerunFailed,
    #[serde(rename = "token.create")]
    TokenCreate,
    #[serde(rename = "token.revoke")]
    TokenRevoke,
    #[serde(rename = "calendar.create")]
    CalendarCreate,
    #[serde(rename = "calendar.update")]
    CalendarUpdate,
    #[serde(rename = "calendar.delete")]
    CalendarDelete,
    /// A job's next due time planned again because a calendar it uses changed.
    #[serde(rename = "job.replan")]
    JobReplan,
}

impl AuditAction {
    pub const ALL: [AuditAction; 18] = [
        AuditAction::JobCreate,
        AuditAction::JobUpdate,
        AuditAction::JobDelete,
        AuditAction::JobPause,
        AuditAction::JobResume,
        AuditAction::JobTrigger,
        AuditAction::JobBackfill,
        AuditAction::RunCancel,
        AuditAction::RunSkipStep,
        AuditAction::RunMarkStepSucceeded,
        AuditAction::RunRerunStep,
        AuditAction::RunRerunFailed,
        AuditAction::TokenCreate,
        AuditAction::TokenRevoke,
        AuditAction::CalendarCreate,
        AuditAction::CalendarUpdate,
        AuditAction::CalendarDelete,
        AuditAction::JobReplan,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::JobCreate => "job.create",
            AuditAction::JobUpdate => "job.update",
            AuditAction::JobDelete => "job.delete",
            AuditAction::JobPause => "job.pause",
            AuditAction::JobResume => "job.resume",
            AuditAction::JobTrigger => "job.trigger",
            AuditAction::JobBackfill => "job.backfill",
            AuditAction::RunSkipStep => "run.skip_step",
            AuditAction::RunMarkStepSucceeded => "run.mark_step_succeeded",
            AuditAction::RunRerunStep => "run.rerun_step",
            AuditAction::RunRerunFailed => "run.rerun_failed",
            AuditAction::RunCancel => "run.cancel",
            AuditAction::TokenCreate => "token.create",
            AuditAction::TokenRevoke => "token.revoke",
            AuditAction::CalendarCreate => "calendar.create",
            AuditAction::CalendarUpdate => "calendar.update",
            AuditAction::CalendarDelete => "calendar.delete",
            AuditAction::JobReplan => "job.replan",
        }
    }
}

impl FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not an audit action"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(list: &[&str]) -> Scope {
        Scope::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn scopes() {
        assert_eq!(scope(&["*"]), Scope::All);
        assert!(scope(&["a", "b"]).allows("a"));
        assert!(!scope(&["a", "b"]).allows("c"));
        assert!(Scope::parse(&[]).is_err());
        assert!(Scope::parse(&["*".into(), "a".into()]).is_err());
        assert!(Scope::parse(&["BAD!".into()]).is_err());
        assert!(scope(&["a", "b"]).covers(&scope(&["a"])));
        assert!(!scope(&["a"]).covers(&scope(&["a", "b"])));
        assert!(!scope(&["a"]).covers(&Scope::All));
        assert_eq!(scope(&["a"]).filter(Some("b")), Some(vec![]));
        assert_eq!(scope(&["a"]).filter(None), Some(vec!["a".to_owned()]));
        assert_eq!(Scope::All.filter(None), None);
    }

    #[test]
    fn grants_stay_within_the_granter() {
        let all = Scope::All;
        let a = scope(&["a"]);
        assert!(may_grant(Role::Admin, &all, Role::Admin, &all).is_ok());
        assert!(may_grant(Role::Admin, &a, Role::Viewer, &a).is_ok());
        assert!(may_grant(Role::Admin, &a, Role::Viewer, &all).is_err());
        assert!(may_grant(Role::Operator, &all, Role::Viewer, &a).is_err());
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(parse_lifetime("90d"), Ok(SignedDuration::from_hours(2160)));
        assert_eq!(parse_lifetime("12h"), Ok(SignedDuration::from_hours(12)));
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("3651d").is_err());
        assert!(parse_lifetime("99999999999d").is_err());
        assert!(parse_lifetime("soon").is_err());
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
    }
}
