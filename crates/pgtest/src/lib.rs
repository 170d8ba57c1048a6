//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder, `pg_ctl start`
//! on a spare port of 127.0.0.1 with `fsync` off (about a second), one fresh database per test
//! on demand, stopped and deleted on drop. Nothing here touches a system cluster.
//!
//! Where PostgreSQL is not installed, [`PgCluster::start`] returns `None` after printing that
//! the test is skipped, so that `cargo test` works on any machine; with `CI=true` a missing
//! PostgreSQL is an error instead (`.ci/run` installs it), so CI never skips these tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where Debian's PostgreSQL keeps its server binaries, newest first.
const BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Holds the data and socket folders; removed after the server stops.
    dir: tempfile::TempDir,
    databases: AtomicUsize,
}

impl PgCluster {
    /// Starts a cluster, or returns `None` (saying so) when PostgreSQL is not installed and
    /// `CI` is not `true`. Panics when it is installed but cannot start: that is a failure.
    pub fn start(test: &str) -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL is not installed, and CI must run the PostgreSQL tests \
                 (.ci/run installs it: apt-get install -y postgresql)"
            );
            // Straight to stderr: the test harness captures `eprintln!` of passing tests, and
            // this line must show in a plain `cargo test`.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: PostgreSQL is not installed (apt-get install -y postgresql)"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("qss-pg-")
            .tempdir()
            .expect("a temporary folder");
        let data = dir.path().join("data");
        let as_root = is_root();
        if as_root {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()));
        }
        run(user_command(&bin.join("initdb"), as_root)
            .args([
                "-A",
                "trust",
                "--no-sync",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data));
        let cluster = PgCluster {
            bin,
            data,
            port: spare_port(),
            dir,
            databases: AtomicUsize::new(0),
        };
        cluster.restart();
        Some(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser `postgres` (trust authentication).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("qss_test_{n}");
        run(Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&name));
        self.url(&name)
    }

    /// Drops a database made by [`PgCluster::create_database`] (given its URL), closing its
    /// sessions first (`dropdb --force`), e.g. those of a server a test never stopped. Best
    /// effort, and silent: it runs in destructors, also while a failed test unwinds.
    pub fn drop_database(&self, url: &str) {
        let name = url.rsplit('/').next().unwrap_or(url);
        let _ = Command::new(self.bin.join("dropdb"))
            .args([
                "--force",
                "--if-exists",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops the server (fast shutdown), e.g. to test what clients see while it is down.
    pub fn stop(&self) {
        run(user_command(&self.bin.join("pg_ctl"), is_root())
            .args(["stop", "-w", "-s", "-m", "fast", "-D"])
            .arg(&self.data));
    }

    /// Starts the server (again) on the same port and data.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(user_command(&self.bin.join("pg_ctl"), is_root())
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(&self.data)
            .args(["-l"])
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options]));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = user_command(&self.bin.join("pg_ctl"), is_root())
            .args(["stop", "-w", "-s", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn find_bin() -> Option<PathBuf> {
    BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` run as the postgres user when we are root, else as ourselves.
fn user_command(program: &Path, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A port free on 127.0.0.1 a moment ago.
fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a spare port on 127.0.0.1")
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
