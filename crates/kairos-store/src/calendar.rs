//! What the stores share about calendars: the fence of a job write planned with them.

use kairos_core::JobSpec;

use crate::error::{StoreError, StoreResult};
use crate::store::CalendarVersion;

/// Checks the calendars a job document names against those found in its namespace
/// (`(name, version)`, read under the write's lock): each must exist, at the version the write
/// was planned with. `CalendarChanged` (naming the first that is not) otherwise.
pub fn fence(
    spec: &JobSpec,
    found: &[(String, i64)],
    planned: &[CalendarVersion],
) -> StoreResult<()> {
    for name in kairos_core::calendar::used_by(spec) {
        let version = found.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let expected = planned.iter().find(|c| c.name == name).map(|c| c.version);
        if version.is_none() || version != expected {
            return Err(StoreError::CalendarChanged {
                namespace: spec.namespace.clone(),
                name,
            });
        }
    }
    Ok(())
}
