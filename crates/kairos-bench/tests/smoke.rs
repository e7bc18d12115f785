//! Every workload once, at a tiny size, through the library: the benchmark keeps compiling and
//! working. Nothing here asserts timing; only that figures come out and that no due time was
//! missed or duplicated.
//!
//! The PostgreSQL tests run on the test database of `kairos_testkit::postgres`
//! (`KAIROS_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`) and skip
//! when it is unreachable, unless `KAIROS_REQUIRE_SERVICES=1`. The failover test also needs
//! the `kairos` binary next to this crate's (`cargo build -p kairos`; `cargo test
//! --workspace` builds it) and skips without it on the same terms.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::path::PathBuf;

use kairos_bench::failover::{self, FailoverParams};
use kairos_bench::floor::{self, FloorParams};
use kairos_bench::report::Measurement;
use kairos_bench::w1::{self, Shape, W1Params};
use kairos_bench::w2::{self, W2Params};
use kairos_bench::w3::{self, W3Params};
use kairos_bench::w4::{self, NodeProcess, W4Params};
use kairos_bench::w5::{self, W5Params};
use kairos_bench::{StoreUrl, chart, report};

fn store() -> StoreUrl {
    "sqlite://".parse().unwrap()
}

/// The test database as a `--store` URL, with a guard that only marks the test's use of it;
/// `None` (skip) when it is unreachable and services are not required.
async fn postgres() -> Option<(StoreUrl, kairos_testkit::postgres::TempSchema)> {
    let guard = kairos_testkit::postgres::temp_schema().await?;
    let url = guard.base_url.parse().unwrap();
    Some((url, guard))
}

/// Schemas of this benchmark (`kb_…`) left on the test database.
async fn bench_schemas(url: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'kb_')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn metric(m: &Measurement, name: &str) -> f64 {
    m.get(name)
        .unwrap_or_else(|| panic!("{} has no {name}: {m:?}", m.workload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_both_shapes_finish_every_run() {
    for shape in [Shape::Bulk, Shape::Steady] {
        let m = w1::run(
            &store(),
            &W1Params {
                n: 200,
                shape,
                depth: 50,
                concurrency: 8,
                keep: false,
                event_log: true,
            },
        )
        .await
        .unwrap();
        assert!(metric(&m, "jobs_per_s") > 0.0, "{m:?}");
        assert_eq!(metric(&m, "failed"), 0.0, "{m:?}");
        assert!(metric(&m, "cpu_s") >= 0.0);
    }
}

/// W2 with `jobs` jobs for two measured seconds: every due time fired once, each measured.
async fn w2_fires_every_due_time_once(shape: w2::Shape, jobs: u64) -> w2::W2Outcome {
    let out = w2::run(
        &store(),
        &W2Params {
            jobs,
            shape,
            secs: 2,
            concurrency: 8,
            nodes: 1,
            keep: false,
        },
    )
    .await
    .unwrap();
    let m = &out.measurement;
    assert_eq!(metric(m, "missed"), 0.0, "{m:?}");
    assert_eq!(metric(m, "duplicates"), 0.0, "{m:?}");
    assert_eq!(metric(m, "runs_measured"), (2 * jobs) as f64, "{m:?}");
    assert_eq!(out.lateness_us.len() as u64, 2 * jobs);
    assert!(metric(m, "lateness_max_ms") >= metric(m, "lateness_p50_ms"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_fires_every_due_time_once_and_draws_the_chart() {
    let out = w2_fires_every_due_time_once(w2::Shape::Herd, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w2.svg");
    let series = chart::Series {
        label: "K=3".into(),
        lateness_us: out.lateness_us,
    };
    chart::lateness_svg(&path, "smoke", &[series]).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("<svg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_spread_counts_each_job_at_its_own_offset() {
    w2_fires_every_due_time_once(w2::Shape::Spread, 4).await;
}

#[test]
fn spread_offsets_divide_the_second() {
    use jiff::SignedDuration;
    let off = |i| w2::Shape::Spread.offset(i, 4);
    assert_eq!(off(0), SignedDuration::ZERO);
    assert_eq!(off(1), SignedDuration::from_millis(250));
    assert_eq!(off(3), SignedDuration::from_millis(750));
    assert_eq!(w2::Shape::Herd.offset(3, 4), SignedDuration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3_runs_true_through_kairos_and_the_bare_loop() {
    let m = w3::run(
        &store(),
        &W3Params {
            n: 20,
            concurrency: 4,
            keep: false,
            ..W3Params::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(metric(&m, "failed"), 0.0, "{m:?}");
    assert!(metric(&m, "ratio") > 0.0, "{m:?}");
    assert!(metric(&m, "bare_us_per_job") > 0.0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_registers_and_starts_a_node_in_a_fresh_process() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_kairos-bench"));
    let m = w4::run(
        &store(),
        &W4Params {
            jobs: 200,
            idle_secs: 1,
            node_process: NodeProcess::Exe(exe),
            keep: false,
        },
    )
    .await
    .unwrap();
    assert!(metric(&m, "register_jobs_per_s") > 0.0, "{m:?}");
    assert!(metric(&m, "store_mib") > 0.0, "{m:?}");
    assert!(metric(&m, "startup_ms") > 0.0, "{m:?}");
    assert!(metric(&m, "rss_after_start_mib") > 0.0, "{m:?}");

    let table = report::table(&report::summarize(&[m]));
    assert!(table.contains("startup_ms"), "{table}");
}

/// W5 tiny, in both shapes: every released step of every measured run gives a sample, and
/// every run and step succeeded with one attempt.
async fn w5_samples_every_released_step(url: &StoreUrl) {
    for shape in [w5::Shape::FanOut { width: 3 }, w5::Shape::Chain { len: 3 }] {
        let m = w5::run(
            url,
            &W5Params {
                shape,
                runs: 2,
                warmup: 1,
                concurrency: 8,
                keep: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            metric(&m, "samples"),
            (2 * shape.samples_per_run()) as f64,
            "{m:?}"
        );
        assert_eq!(metric(&m, "errors"), 0.0, "{m:?}");
        assert_eq!(metric(&m, "extra_attempts"), 0.0, "{m:?}");
        assert!(metric(&m, "handoff_max_ms") >= metric(&m, "handoff_p50_ms"));
        assert!(metric(&m, "run_wall_p50_ms") > 0.0, "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w5_samples_every_released_step_of_a_fan_out_and_a_chain() {
    w5_samples_every_released_step(&store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w5_runs_on_postgres() {
    let Some((url, _guard)) = postgres().await else {
        return;
    };
    w5_samples_every_released_step(&url).await;
}

/// The floor claims and finishes every run of each variant (it fails if a claim finds nothing,
/// a finish loses its lease, or the queued runs do not add up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_claims_and_finishes_runs_three_ways() {
    let m = floor::run(&store(), &FloorParams { n: 20, keep: false })
        .await
        .unwrap();
    for name in [
        "round_trip_cpu_us",
        "round_trip_us",
        "store_cpu_us_per_run",
        "store_us_per_run",
        "sqlite_cpu_us_per_run",
        "sqlite_us_per_run",
        "sqlite_merged_cpu_us_per_run",
        "sqlite_merged_us_per_run",
    ] {
        assert!(metric(&m, name) >= 0.0, "{m:?}");
    }
    assert!(metric(&m, "store_us_per_run") > 0.0, "{m:?}");
}

#[test]
fn unsupported_stores_are_refused_with_exit_code_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos-bench"))
        .args(["w1", "--n", "1", "--store", "redis://localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not supported yet"), "{stderr}");

    // Several nodes, or the failover, need a cluster store.
    for args in [
        &["w2", "--jobs", "1", "--nodes", "3"][..],
        &["failover", "--kills", "1"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos-bench"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("needs a cluster store"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_runs_on_postgres_in_a_schema_of_its_own_dropped_afterwards() {
    let Some((url, guard)) = postgres().await else {
        return;
    };
    for shape in [Shape::Bulk, Shape::Steady] {
        let m = w1::run(
            &url,
            &W1Params {
                n: 200,
                shape,
                depth: 50,
                concurrency: 8,
                keep: false,
                event_log: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(m.params["store"], "postgres", "{m:?}");
        assert!(metric(&m, "jobs_per_s") > 0.0, "{m:?}");
        assert_eq!(metric(&m, "failed"), 0.0, "{m:?}");
    }
    // A run's schema exists while it runs and is dropped with its place.
    let place = url.fresh("smoke", false).unwrap();
    let name = place.postgres().unwrap().name.clone();
    place.open().await.unwrap().close().await;
    assert!(bench_schemas(&guard.base_url).await.contains(&name));
    drop(place);
    assert!(!bench_schemas(&guard.base_url).await.contains(&name));
}

/// Three nodes in this process share one schema: each due time fires exactly once among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_with_three_nodes_on_postgres_fires_every_due_time_once() {
    let Some((url, _guard)) = postgres().await else {
        return;
    };
    let out = w2::run(
        &url,
        &W2Params {
            jobs: 3,
            shape: w2::Shape::Herd,
            secs: 2,
            concurrency: 8,
            nodes: 3,
            keep: false,
        },
    )
    .await
    .unwrap();
    let m = &out.measurement;
    assert_eq!(m.params["nodes"], 3, "{m:?}");
    assert_eq!(metric(m, "missed"), 0.0, "{m:?}");
    assert_eq!(metric(m, "duplicates"), 0.0, "{m:?}");
    assert_eq!(metric(m, "runs_measured"), 6.0, "{m:?}");
}

/// The `kairos` binary beside this crate's, or `None` (skip) unless services are required.
fn kairos_bin() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kairos-bench")).with_file_name("kairos");
    if bin.is_file() {
        return Some(bin);
    }
    let msg = format!(
        "{} is missing: run `cargo build -p kairos` first",
        bin.display()
    );
    if std::env::var(kairos_testkit::postgres::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// Two real nodes, one kill of the leader: a new leader comes, the job keeps firing, and every
/// due time of the window has exactly one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_two_nodes_and_one_kill_keeps_one_run_per_due_time() {
    let Some((url, _guard)) = postgres().await else {
        return;
    };
    let Some(bin) = kairos_bin() else {
        return;
    };
    let m = failover::run(
        &url,
        &FailoverParams {
            nodes: 2,
            kills: 1,
            kairos_bin: Some(bin),
            settle_secs: 1,
            lease: Some("3s".into()),
            keep: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(metric(&m, "missed"), 0.0, "{m:?}");
    assert_eq!(metric(&m, "duplicates"), 0.0, "{m:?}");
    assert_eq!(metric(&m, "not_succeeded"), 0.0, "{m:?}");
    assert!(metric(&m, "due_times") >= 2.0, "{m:?}");
    assert!(metric(&m, "kill1_new_leader_ms") > 0.0, "{m:?}");
    assert!(metric(&m, "kill1_next_fire_ms") > 0.0, "{m:?}");
    assert!(metric(&m, "next_fire_max_ms") >= metric(&m, "next_fire_p50_ms"));
}

#[test]
fn the_binary_prints_json_for_scripts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos-bench"))
        .args([
            "w1", "--n", "50", "--shape", "bulk", "--json", "--repeat", "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &json[0];
    assert_eq!(first["workload"], "w1-bulk");
    assert_eq!(first["runs"], 2);
    assert_eq!(first["params"]["n"], 50);
    assert!(
        first["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "jobs_per_s")
    );
}
