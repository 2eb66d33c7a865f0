//! Issue 14's benchmark: `rowstream export` of the 1M-row benchmark table to
//! a file, side by side in one run with `curl -o` of the same stream (no
//! verification) and the `sqlite3` CLI writing CSV locally; then a resume
//! after 900,000 rows (the exporter killed with SIGKILL there, the same
//! command run again) against the full export's time. Run by
//! `scripts/bench.sh`; writes its section of BENCHMARKS.md
//! (`<!-- export -->` … `<!-- /export -->`). `ROWSTREAM_BENCH_QUICK=1`: one
//! repetition, BENCHMARKS.md left alone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proc_util::sh;

#[path = "common/proc.rs"]
mod proc_util;
#[path = "common/table.rs"]
mod table;

const ROWS: u64 = 1_000_000;
const RESUME_AT: u64 = 900_000;
const BIN: &str = env!("CARGO_BIN_EXE_rowstream");

fn main() {
    let quick = std::env::var("ROWSTREAM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let reps = if quick { 1 } else { 5 };
    let started = Instant::now();
    let load_start = sh("cut -d' ' -f1-3 /proc/loadavg");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rowstream-bench");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let db = table::ensure_db(&cache, ROWS);
    let work = cache.join("export");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");

    let server = Server::start(&db);
    let url = format!("http://{}", server.addr);
    let body = r#"{"query":"SELECT * FROM t"}"#;
    let have_sqlite3 = Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());

    let out = work.join("t.ndjson");
    let curl_out = work.join("t.curl");
    let csv_out = work.join("t.csv");
    let (mut ours, mut curl, mut lite) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        let o = Command::new(BIN)
            .args([
                "export",
                "--server",
                &url,
                "--query",
                "SELECT * FROM t",
                "--quiet",
                "-o",
            ])
            .arg(&out)
            .output()
            .expect("rowstream export");
        ours.push(t.elapsed().as_secs_f64());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

        let t = Instant::now();
        let o = Command::new("curl")
            .args(["-s", "-f", "-o"])
            .arg(&curl_out)
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ])
            .arg(format!("{url}/v1/query/stream"))
            .output()
            .expect("curl");
        curl.push(t.elapsed().as_secs_f64());
        assert!(o.status.success(), "curl failed");

        if have_sqlite3 {
            let t = Instant::now();
            let o = Command::new("sqlite3")
                .args(["-csv", "-header"])
                .arg(&db)
                .arg(".once ".to_string() + csv_out.to_str().expect("utf-8 path"))
                .arg("SELECT * FROM t")
                .output()
                .expect("sqlite3");
            lite.push(t.elapsed().as_secs_f64());
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    // Same rows: the export's lines are the stream's row values.
    let lines = BufReader::new(std::fs::File::open(&out).expect("export file"))
        .lines()
        .count() as u64;
    assert_eq!(lines, ROWS);
    let file_bytes = std::fs::metadata(&out).expect("export").len();
    let curl_bytes = std::fs::metadata(&curl_out).expect("curl").len();

    // Resume after 900,000 rows: kill -9 once the state records them.
    let mut resumes = Vec::new();
    let mut resumed_from = Vec::new();
    for _ in 0..reps.min(3) {
        let _ = std::fs::remove_file(&out);
        let state = rowstream::client::export::state_path(&out);
        let mut child = Command::new(BIN)
            .args([
                "export",
                "--server",
                &url,
                "--query",
                "SELECT * FROM t",
                "--quiet",
                "-o",
            ])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("export");
        loop {
            if let Ok(Some((_, rows, _))) = rowstream::client::export::read_state(&state) {
                if rows >= RESUME_AT {
                    break;
                }
            }
            assert!(
                child.try_wait().expect("wait").is_none(),
                "finished before the kill"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        let (_, rows, _) = rowstream::client::export::read_state(&state)
            .expect("state")
            .expect("a record");
        resumed_from.push(rows);
        let t = Instant::now();
        let o = Command::new(BIN)
            .args([
                "export",
                "--server",
                &url,
                "--query",
                "SELECT * FROM t",
                "-o",
            ])
            .arg(&out)
            .output()
            .expect("rerun");
        resumes.push(t.elapsed().as_secs_f64());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("continued from row {rows}")));
        assert_eq!(std::fs::metadata(&out).expect("resumed").len(), file_bytes);
    }
    drop(server);

    let (m_ours, m_curl) = (median(&mut ours), median(&mut curl));
    let m_resume = median(&mut resumes);
    let ratio = m_ours / m_curl;
    let resume_ratio = m_resume / m_ours;
    let lite_cell = if have_sqlite3 {
        let m = median(&mut lite);
        format!("{:.2} s ({:.2}×)", m, m_ours / m)
    } else {
        "— (no sqlite3 CLI; `apt-get install sqlite3`)".into()
    };
    let rows = [
        format!(
            "| E1 | 1M rows to a file: wall time (median of {reps}) | {m_ours:.2} s (verified, state saved per chunk) | `curl -o` {m_curl:.2} s (no verification) | {ratio:.2}× curl's time | ≤ 1.1× {} |",
            tick(ratio <= 1.1)
        ),
        format!(
            "| E2 | 1M rows to CSV: `sqlite3 -csv` on the database file (local, no network) | — | {lite_cell} | (rowstream NDJSON time ÷ sqlite3 time) | (reference) |"
        ),
        format!(
            "| E3 | Resume after {} rows (killed with SIGKILL, same command again; median of {}) | {m_resume:.2} s | full export {m_ours:.2} s | {:.1} % of the full export | ≤ 15 % {} |",
            resumed_from.iter().min().copied().unwrap_or(0),
            resumes.len(),
            resume_ratio * 100.0,
            tick(resume_ratio <= 0.15)
        ),
    ];
    let section = format!(
        "<!-- export -->\n## rowstream export (issue 14)\n\n\
         - Command: `scripts/bench.sh` (`cargo bench --features server,client --bench export`){}\n\
         - Machine: {} ({} vCPU); load average {} at start, {} at end; {:.0} s\n\n\
         | # | item | rowstream export | alternative | ratio | target |\n|---|---|---|---|---|---|\n{}\n\n\
         - Data: the 1,000,000-row `t` of the issue 7 benchmark ({} B of NDJSON rows in the file, {} B of stream body through curl); `SELECT * FROM t`, shape `object`, the release `rowstream serve` on loopback (default settings, audit log to /dev/null). The server and each client run as child processes, alternating, on the same 2 cores.\n\
         - rowstream: `rowstream export --server URL --query 'SELECT * FROM t' --quiet -o FILE` (frames and verifies every row line with the core's verifier, writes each network chunk through to `FILE.partial` and saves the state file, renames at the verified end; `--count estimated` by default, which this server refuses once with 400 so the request is repeated without it). curl: `curl -s -o FILE --data-binary '{{\"query\":…}}'` of the same stream. sqlite3: `sqlite3 -csv -header DB '.once FILE' 'SELECT * FROM t'`.\n\
         - Resume: the exporter is killed once its state records ≥ {RESUME_AT} rows (rows recorded: {:?}); the rerun's wall time includes starting the process, restoring the verifier, the resume request (the server re-verifies the prefix digest), the remaining rows and the final rename.\n\
         - All runs (s): rowstream {:?}; curl {:?}; sqlite3 {:?}; resume {:?}\n\
         <!-- /export -->\n",
        if quick { " (QUICK: smoke run)" } else { "" },
        sh("lscpu | grep 'Model name' | cut -d: -f2").trim(),
        sh("nproc"),
        load_start,
        sh("cut -d' ' -f1-3 /proc/loadavg"),
        started.elapsed().as_secs_f64(),
        rows.join("\n"),
        file_bytes,
        curl_bytes,
        resumed_from,
        round(&ours),
        round(&curl),
        round(&lite),
        round(&resumes),
    );
    println!("{section}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find("<!-- export -->"), old.find("<!-- /export -->")) {
        (Some(a), Some(b)) => format!(
            "{}{}{}",
            &old[..a],
            section.trim_end(),
            &old[b + "<!-- /export -->".len()..]
        ),
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    if !quick {
        std::fs::write(&path, new).expect("BENCHMARKS.md");
    }
}

fn round(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn tick(ok: bool) -> &'static str {
    if ok {
        "✅ holds"
    } else {
        "❌ missed"
    }
}

/// `rowstream serve` (release) as a child process.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(db: &Path) -> Server {
        let (child, addr) =
            proc_util::spawn_serve(BIN, db, &["--set", "stream.snapshot.ttl_ms=600000"]);
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
