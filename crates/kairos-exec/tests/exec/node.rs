//! A child dies with its node: the test kills a helper "node" process running a task and checks
//! that the task's process dies too (`PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::*;

const HELPER_ENV: &str = "KAIROS_EXEC_NODE_HELPER";

#[tokio::test]
async fn child_dies_with_its_node() {
    child_dies_with_its_node_as("server").await;
    // A change of user clears the parent death signal: it must be set after the switch.
    if rustix::process::geteuid().is_root() {
        child_dies_with_its_node_as("nobody").await;
    }
}

/// `user` is `server` (the test's own user) or a user for `run_as`.
async fn child_dies_with_its_node_as(user: &str) {
    // A node killed with SIGKILL leaves its tasks' exchange directories behind: in a temp
    // directory of the test's.
    let tmp = tempfile::tempdir().unwrap();
    // The helper is this test binary running only the ignored `node::helper` test.
    let mut node = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "node::helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, user)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = node.stdout.take().unwrap();
    let report = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                // libtest prints `test node::helper ... ` before the helper's own output.
                let (_, pgid) = line.split_once("node child pgid=")?;
                Some(pgid.trim().parse::<i32>().unwrap())
            })
    });
    let pgid = match tokio::time::timeout(PATIENCE, report).await {
        Ok(Ok(Some(pgid))) => pgid,
        other => {
            let _ = node.kill();
            let _ = node.wait();
            panic!("the helper did not report its child: {other:?}");
        }
    };
    assert!(
        !live_members(pgid).is_empty(),
        "the task runs while its node lives"
    );

    node.kill().unwrap();
    node.wait().unwrap();
    let gone = group_gone(pgid).await;
    if !gone {
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(pgid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(gone, "the task outlived its node");
}

#[tokio::test]
#[ignore = "helper process of `child_dies_with_its_node`"]
async fn helper() {
    let Ok(user) = std::env::var(HELPER_ENV) else {
        return;
    };
    let settings = kairos_core::spec::ProcessSettings {
        run_as: (user != "server").then_some(kairos_core::spec::RunAs { user, group: None }),
        ..Default::default()
    };
    // `exec` keeps the pid (and the parent death signal) for `sleep`.
    let req = kairos_exec::ExecRequest {
        timeout: None,
        ..request(shell_with("echo pgid=$$; exec sleep 300", settings))
    };
    let output = std::sync::Arc::clone(&req.output);
    let running = tokio::spawn(execute(req));
    output_contains(&output, "pgid=").await;
    println!("node child pgid={}", pgid_in(&output.snapshot()));
    let _ = running.await;
}
