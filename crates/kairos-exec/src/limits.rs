//! What a task's `limits` become on this machine.
//!
//! | limit | with a task cgroup | without |
//! | --- | --- | --- |
//! | `memory` | the cgroup's memory limit: the whole task, killed by the kernel when over | `RLIMIT_AS` per process: address space (mapped, not used, memory), so allocations fail |
//! | `processes` | the cgroup's `pids.max`: processes and threads of the task | `RLIMIT_NPROC`: every process of the task's user (not binding for root, so not applied then) |
//! | `cpu_time` | `RLIMIT_CPU` per process (`SIGXCPU`, then `SIGKILL` a second later) | same |
//! | `open_files` | `RLIMIT_NOFILE` per process | same |
//!
//! The attempt's output says how each limit was applied, and which could not be.

use kairos_core::duration::parse_duration;
use kairos_core::size::parse_size;
use kairos_core::spec::LimitsSpec;

use crate::cgroup::{CgroupLimits, Setup};

/// A `setrlimit` the child makes before `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    AddressSpace,
    CpuSeconds,
    OpenFiles,
    Processes,
}

/// How the limits are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LimitPlan {
    pub cgroup: CgroupLimits,
    pub rlimits: Vec<Rlimit>,
    /// One line saying how each limit is applied (`None` without limits).
    pub summary: Option<String>,
    /// Limits that could not be applied, and why.
    pub not_applied: Vec<String>,
    /// Limits lowered to what the server may grant (see [`clamp_to_hard_limits`]).
    pub lowered: Vec<String>,
}

/// Plans `spec` for a task running as `task_uid` on a server running as `server_uid`, with
/// `cgroups` where there are some. The spec was validated; a value that does not parse is an
/// error anyway.
pub(crate) fn plan(
    spec: &LimitsSpec,
    cgroups: Option<&Setup>,
    task_uid: u32,
    server_uid: u32,
) -> Result<LimitPlan, String> {
    let mut plan = LimitPlan::default();
    let mut applied = Vec::new();
    let cgroup_name = |setup: &Setup| match setup.version() {
        crate::cgroup::Version::V1 => "cgroup v1",
        crate::cgroup::Version::V2 => "cgroup v2",
    };
    if let Some(memory) = &spec.memory {
        let bytes = parse_size(memory).map_err(|e| format!("limits.memory: {e}"))?;
        match cgroups.filter(|s| s.has_memory()) {
            Some(setup) => {
                plan.cgroup.memory_bytes = Some(bytes);
                applied.push(format!("memory {memory} ({})", cgroup_name(setup)));
            }
            None => {
                plan.rlimits.push(Rlimit {
                    resource: Resource::AddressSpace,
                    soft: bytes,
                    hard: bytes,
                });
                applied.push(format!("memory {memory} (address space of each process)"));
            }
        }
    }
    if let Some(n) = spec.processes {
        match cgroups.filter(|s| s.has_pids()) {
            Some(setup) => {
                plan.cgroup.processes = Some(n);
                applied.push(format!("processes {n} ({})", cgroup_name(setup)));
            }
            None if task_uid != 0 && task_uid != server_uid => {
                plan.rlimits.push(Rlimit {
                    resource: Resource::Processes,
                    soft: n,
                    hard: n,
                });
                applied.push(format!("processes {n} (every process of uid {task_uid})"));
            }
            None if task_uid == 0 => plan.not_applied.push(format!(
                "processes {n}: no pids cgroup here, and RLIMIT_NPROC does not bind root; run the \
                 task as another user (run_as) or give Kairos a cgroup"
            )),
            None => plan.not_applied.push(format!(
                "processes {n}: no pids cgroup here, and RLIMIT_NPROC would count the server's \
                 own threads (the task runs as its user); run the task as another user (run_as) \
                 or give Kairos a cgroup"
            )),
        }
    }
    if let Some(cpu) = &spec.cpu_time {
        let d = parse_duration(cpu, false).map_err(|e| format!("limits.cpu_time: {e}"))?;
        let secs = u64::try_from(d.as_secs()).unwrap_or(1).max(1) + u64::from(d.subsec_nanos() > 0);
        plan.rlimits.push(Rlimit {
            resource: Resource::CpuSeconds,
            soft: secs,
            hard: secs + 1,
        });
        applied.push(format!("cpu_time {cpu} (each process)"));
    }
    if let Some(n) = spec.open_files {
        plan.rlimits.push(Rlimit {
            resource: Resource::OpenFiles,
            soft: n,
            hard: n,
        });
        applied.push(format!("open_files {n} (each process)"));
    }
    if !applied.is_empty() {
        plan.summary = Some(format!("limits: {}", applied.join(", ")));
    }
    Ok(plan)
}

/// Lowers each limit to the server's own hard limit: a server that is not root cannot raise a
/// hard limit, and the child's `prlimit64` would fail. Blocking (reads the limits).
pub(crate) fn clamp_to_hard_limits(plan: &mut LimitPlan) {
    use rustix::process::{Resource as R, getrlimit};
    for rlimit in &mut plan.rlimits {
        let (resource, name) = match rlimit.resource {
            Resource::AddressSpace => (R::As, "memory"),
            Resource::CpuSeconds => (R::Cpu, "cpu_time"),
            Resource::OpenFiles => (R::Nofile, "open_files"),
            Resource::Processes => (R::Nproc, "processes"),
        };
        let Some(hard) = getrlimit(resource).maximum else {
            continue;
        };
        if rlimit.hard > hard {
            plan.lowered.push(format!(
                "limit lowered: {name} to the server's own hard limit {hard} (a server that is \
                 not root cannot raise it)"
            ));
            rlimit.hard = hard;
            rlimit.soft = rlimit.soft.min(hard);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn limits(memory: Option<&str>, processes: Option<u64>) -> LimitsSpec {
        LimitsSpec {
            memory: memory.map(str::to_owned),
            cpu_time: Some("1500ms".into()),
            open_files: Some(64),
            processes,
        }
    }

    #[test]
    fn without_cgroups_limits_fall_back_to_setrlimit_and_say_so() {
        let plan = plan(&limits(Some("64MiB"), Some(10)), None, 1000, 0).unwrap();
        assert_eq!(plan.cgroup, CgroupLimits::default());
        let resources: Vec<Resource> = plan.rlimits.iter().map(|r| r.resource).collect();
        assert_eq!(
            resources,
            [
                Resource::AddressSpace,
                Resource::Processes,
                Resource::CpuSeconds,
                Resource::OpenFiles
            ]
        );
        assert_eq!(plan.rlimits[2].soft, 2, "cpu seconds round up");
        assert!(plan.not_applied.is_empty());
        let summary = plan.summary.unwrap();
        assert!(summary.contains("every process of uid 1000"), "{summary}");

        // For root, RLIMIT_NPROC binds nothing: the limit is reported as not applied.
        let plan = super::plan(&limits(None, Some(10)), None, 0, 0).unwrap();
        assert!(
            plan.rlimits
                .iter()
                .all(|r| r.resource != Resource::Processes)
        );
        assert!(
            plan.not_applied[0].contains("does not bind root"),
            "{:?}",
            plan.not_applied
        );
        // Nor for a task of the server's own user: it would count the server's threads.
        let plan = super::plan(&limits(None, Some(10)), None, 1000, 1000).unwrap();
        assert!(
            plan.rlimits
                .iter()
                .all(|r| r.resource != Resource::Processes)
        );
        assert!(
            plan.not_applied[0].contains("server's own threads"),
            "{:?}",
            plan.not_applied
        );
        assert_eq!(
            super::plan(&LimitsSpec::default(), None, 0, 0).unwrap(),
            LimitPlan::default()
        );
    }

    #[test]
    fn limits_above_the_servers_hard_limits_are_lowered() {
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .unwrap_or(u64::MAX);
        if hard == u64::MAX {
            return;
        }
        let mut plan = plan(
            &LimitsSpec {
                open_files: Some(hard + 1),
                ..LimitsSpec::default()
            },
            None,
            1000,
            1000,
        )
        .unwrap();
        clamp_to_hard_limits(&mut plan);
        assert_eq!(plan.rlimits[0].hard, hard);
        assert!(plan.lowered[0].contains("open_files"), "{:?}", plan.lowered);
    }
}
