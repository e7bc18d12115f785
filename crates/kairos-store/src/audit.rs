//! One change for the audit log, as every store writes it (in the transaction of the change).

use kairos_core::auth::AuditAction;

use crate::model::Token;

/// A change to record in the audit log.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub actor: &'a str,
    pub action: AuditAction,
    pub namespace: Option<&'a str>,
    pub job: Option<&'a str>,
    pub run_id: Option<i64>,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    pub detail: Option<String>,
}

impl<'a> AuditRecord<'a> {
    /// A change to job `namespace/job`.
    pub fn job(actor: &'a str, action: AuditAction, namespace: &'a str, job: &'a str) -> Self {
        Self {
            actor,
            action,
            namespace: Some(namespace),
            job: Some(job),
            run_id: None,
            version_before: None,
            version_after: None,
            detail: None,
        }
    }

    /// A change to a token (no namespace): its name, role and scope as the detail.
    pub fn token(actor: &'a str, action: AuditAction, token: &Token) -> Self {
        Self {
            actor,
            action,
            namespace: None,
            job: None,
            run_id: None,
            version_before: None,
            version_after: None,
            detail: Some(format!(
                "token `{}`: role {}, namespaces {}",
                token.name, token.role, token.scope
            )),
        }
    }

    /// A change to calendar `name` of `namespace` (named in the detail).
    pub fn calendar(actor: &'a str, action: AuditAction, namespace: &'a str, name: &str) -> Self {
        Self {
            actor,
            action,
            namespace: Some(namespace),
            job: None,
            run_id: None,
            version_before: None,
            version_after: None,
            detail: Some(format!("calendar `{name}`")),
        }
    }

    pub fn detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn versions(mut self, before: Option<i64>, after: Option<i64>) -> Self {
        self.version_before = before;
        self.version_after = after;
        self
    }

    pub fn run(mut self, run_id: i64) -> Self {
        self.run_id = Some(run_id);
        self
    }
}
