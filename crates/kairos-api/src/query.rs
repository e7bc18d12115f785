//! Query strings: every route names the parameters it takes and refuses any other (a typo such
//! as `?namspace=` must not silently list the default namespace), and a namespace given in the
//! query is checked like one in a job document.

use kairos_core::job::validate_name;
use kairos_core::spec::DEFAULT_NAMESPACE;
use serde::Deserialize;

use crate::error::ApiError;

/// The query of a route that takes no parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// `?namespace=` of the routes that address one job.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuery {
    /// Namespace of the job. Default `default`.
    pub namespace: Option<String>,
}

impl NamespaceQuery {
    /// The namespace asked for (default `default`), or 400 when it is not a valid name.
    pub fn get(&self) -> Result<&str, ApiError> {
        checked_namespace(self.namespace.as_deref()).map(|ns| ns.unwrap_or(DEFAULT_NAMESPACE))
    }
}

/// A namespace from a query, if given, checked as a name (400 `namespace` otherwise).
pub fn checked_namespace(namespace: Option<&str>) -> Result<Option<&str>, ApiError> {
    match namespace {
        Some(ns) => validate_name(ns)
            .map(|()| Some(ns))
            .map_err(|e| ApiError::bad_request("namespace", e)),
        None => Ok(None),
    }
}
