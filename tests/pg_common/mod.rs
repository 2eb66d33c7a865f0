//! A throwaway PostgreSQL server for the tests: `initdb` into a temporary
//! directory, `postgres` on a free loopback port with a private socket
//! directory, run as the `postgres` OS user when the tests run as root
//! (PostgreSQL refuses to run as root). The server stops when the test
//! process exits, however it exits: it is started behind a shell that
//! stops it once the test process's end of a pipe closes.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The PostgreSQL binaries (Debian's layout first, then `pg_config`).
fn bindir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    if let Some(p) = found.pop() {
        return p;
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("PostgreSQL is not installed (scripts/setup.sh installs it)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root.
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running PostgreSQL server.
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    _guard: Mutex<Child>,
}

impl PgServer {
    /// Starts a new server (a few seconds).
    pub fn start() -> PgServer {
        let bin = bindir();
        let dir = std::env::temp_dir().join(format!(
            "rowstream-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        let data = dir.join("data");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of {dir:?} failed");
        }
        let out = as_pg(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // `read` returns when this process's end of stdin closes (exit, kill
        // -9, panic): then the server gets a fast shutdown.
        let script = format!(
            "{postgres} -D {data} -p {port} -k {sock} -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=200 -c shared_buffers=32MB >{log} 2>&1 & pid=$!; \
             read _; kill -INT $pid; wait $pid; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            sock = sock.display(),
            log = dir.join("log").display(),
            dir = dir.display(),
        );
        let sh = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let mut sh = sh;
        let child = sh
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let server = PgServer {
            port,
            dir,
            _guard: Mutex::new(child),
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if server.psql_try("postgres", "SELECT 1").is_ok() {
                break;
            }
            assert!(
                Instant::now() < until,
                "postgres did not start: {}",
                std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The superuser's URL of database `db`.
    pub fn admin_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A role's URL of database `db` (trust authentication).
    pub fn url(&self, role: &str, db: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{db}", self.port)
    }

    fn psql_try(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` as the superuser in `db`; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_try(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// A new database with a SELECT-only role `reader` (shared by the
    /// cluster) allowed to read every table created in it afterwards by
    /// `setup`.
    pub fn database(&self, name: &str, setup: &str) -> String {
        // CREATE DATABASE copies template1, which must have no other user:
        // one at a time.
        static CREATE: Mutex<()> = Mutex::new(());
        {
            let _one = CREATE.lock().unwrap_or_else(|p| p.into_inner());
            self.psql("postgres", &format!("CREATE DATABASE {name}"));
            self.ensure_reader();
        }
        self.psql(
            name,
            &format!(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO reader; \
                 {setup}"
            ),
        );
        self.url("reader", name)
    }

    fn ensure_reader(&self) {
        let exists = self.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'reader'",
        );
        if exists == "0" {
            self.psql("postgres", "CREATE ROLE reader LOGIN");
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut child = self._guard.lock().unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One server per test binary (started on first use).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// A unique database name for a test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed))
}
