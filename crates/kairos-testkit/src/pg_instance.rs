//! A private PostgreSQL server for a test that must restart or break its database, started
//! with `initdb` and `pg_ctl` in a temporary directory (so nothing else on the machine is
//! disturbed). Fast and unsafe settings (`fsync=off`): test data only.
//!
//! The binaries come from `KAIROS_PG_BIN` (default `/usr/lib/postgresql/15/bin`). PostgreSQL
//! refuses to run as root; a test running as root runs them as the `postgres` user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// A running private server; stopped (immediately) and removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivatePostgres {
    /// `None` (with the reason on stderr) when the binaries are missing; with
    /// `KAIROS_REQUIRE_SERVICES=1` that is a panic instead.
    pub async fn start() -> Option<Self> {
        let bin = PathBuf::from(
            std::env::var("KAIROS_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        if !bin.join("initdb").exists() {
            let why = format!("no initdb in {} (set KAIROS_PG_BIN)", bin.display());
            if std::env::var(crate::postgres::REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            return None;
        }
        let as_postgres = rustix::process::geteuid().is_root();
        let dir = tempfile::Builder::new()
            .prefix("kairos-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the data directory failed");
        }
        let pg = Self {
            port: free_port(),
            dir,
            bin,
            as_postgres,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .await;
        pg.start_server().await;
        pg.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "kairos",
            ],
        )
        .await;
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL of its `kairos` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/kairos", self.port)
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.args(args).output())
            .await
            .unwrap_or_else(|_| panic!("{program} timed out"))
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        )
        .await;
    }

    /// Stops the server at once, as a crash would (no checkpoint; recovery at the next start).
    pub async fn crash(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .await;
    }

    /// Starts it again on the same port.
    pub async fn start_again(&self) {
        self.start_server().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
