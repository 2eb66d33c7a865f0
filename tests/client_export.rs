//! `rowstream export` against the real `rowstream serve` binary: one-shot
//! exports, kill -9 and rerun, dropped and tampered connections, a
//! restarted server, CSV read back.
#![cfg(all(feature = "server", feature = "client"))]

mod client_common;
mod server_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client_common::*;
use server_common::{make_db, query, row_lines, seed, Rng, ServerProcess, TempDir};

const CODE_REFUSED: i32 = 3;
const CODE_DIGEST_MISMATCH: i32 = 4;
const CODE_NOT_RESUMABLE: i32 = 6;
const CODE_INTERRUPTED: i32 = 5;

struct Fixture {
    dir: TempDir,
    audit: PathBuf,
    server: ServerProcess,
}

fn serve(dir: &TempDir, db: &Path, listen: &str, extra: &[&str]) -> ServerProcess {
    let audit = dir.path("audit.jsonl");
    let mut args = vec![
        "serve",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        listen,
        "--audit-log",
        audit.to_str().unwrap(),
        "--set",
        "stream.chunk.max_rows=100",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(args, false)
}

fn fixture(rows: i64) -> Fixture {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_rich_db(&db, rows);
    let server = serve(&dir, &db, "127.0.0.1:0", &[]);
    Fixture {
        audit: dir.path("audit.jsonl"),
        dir,
        server,
    }
}

impl Fixture {
    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

const Q: &str = "SELECT * FROM r";

/// The row values the server sends for `sql` (shape `object`), one per line.
fn server_rows(addr: std::net::SocketAddr, sql: &str) -> Vec<String> {
    let r = query(addr, sql);
    assert_eq!(r.status, 200);
    row_lines(&r.lines())
        .into_iter()
        .map(|l| l["{\"row\":".len()..l.len() - 1].to_owned())
        .collect()
}

fn ok(o: &std::process::Output) {
    assert_eq!(code(o), 0, "export failed: {}", stderr(o));
}

#[test]
fn a_one_shot_export_equals_the_servers_rows_and_csv_reads_back() {
    let f = fixture(2_000);
    let url = f.url();
    let expected = server_rows(f.server.addr, Q);
    assert_eq!(expected.len(), 2_000);

    let out = f.dir.path("r.ndjson");
    let o = export(&["--server", &url, "--query", Q, "-o", out.to_str().unwrap()]);
    ok(&o);
    let text = String::from_utf8(read(&out)).unwrap();
    assert_eq!(
        text,
        expected
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>()
    );
    assert!(stderr(&o).contains("2000 rows"), "{}", stderr(&o));
    assert!(!files::partial(&out).exists() && !files::state(&out).exists());

    // Array shape: the same values in column order.
    let arr = f.dir.path("r-array.ndjson");
    ok(&export(&[
        "--server",
        &url,
        "--query",
        Q,
        "--shape",
        "array",
        "--quiet",
        "-o",
        arr.to_str().unwrap(),
    ]));
    let arr_rows: Vec<serde_json::Value> = String::from_utf8(read(&arr))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cols = ["id", "name", "note", "score", "data", "doc"];
    for (a, o) in arr_rows.iter().zip(&expected) {
        let o: serde_json::Value = serde_json::from_str(o).unwrap();
        let from_obj: Vec<&serde_json::Value> = cols.iter().map(|c| &o[c]).collect();
        assert_eq!(a.as_array().unwrap().iter().collect::<Vec<_>>(), from_obj);
    }

    // CSV, both shapes: parses back to the same values.
    for shape in ["object", "array"] {
        let csv_path = f.dir.path(&format!("r-{shape}.csv"));
        let o = export(&[
            "--server",
            &url,
            "--query",
            Q,
            "--format",
            "csv",
            "--shape",
            shape,
            "-o",
            csv_path.to_str().unwrap(),
        ]);
        ok(&o);
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_path(&csv_path)
            .unwrap();
        assert_eq!(rd.headers().unwrap().iter().collect::<Vec<_>>(), cols);
        let records: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), expected.len());
        for (rec, o) in records.iter().zip(&expected) {
            let o: serde_json::Value = serde_json::from_str(o).unwrap();
            for (i, c) in cols.iter().enumerate() {
                let want = match &o[c] {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                assert_eq!(rec.get(i).unwrap(), want, "column {c} of {o}");
            }
        }
        // NULL is empty, an empty string is "" (so the two stay apart).
        let raw = String::from_utf8(read(&csv_path)).unwrap();
        let row1 = raw.split("\r\n").nth(1).unwrap();
        assert!(row1.starts_with("1,name 1,\"\",0.125,"), "{row1}");
        let row6 = raw.split("\r\n").find(|l| l.starts_with("6,")).unwrap();
        assert!(row6.starts_with("6,name 6,,0.75,"), "{row6}");
        assert!(
            raw.contains(",=SUM(A3:A9),"),
            "formulas are written as they are"
        );
    }
}

mod files {
    use std::path::{Path, PathBuf};
    pub fn partial(out: &Path) -> PathBuf {
        rowstream::client::export::partial_path(out)
    }
    pub fn state(out: &Path) -> PathBuf {
        rowstream::client::export::state_path(out)
    }
}

/// Starts an exporter, kills it (SIGKILL) once its state records at least
/// `at_rows` rows; returns the rows recorded at the kill (None when it
/// finished first).
fn kill_at(args: &[&str], out: &Path, at_rows: u64) -> Option<u64> {
    let mut child = Command::new(BIN)
        .arg("export")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = files::state(out);
    let t = Instant::now();
    loop {
        if let Ok(Some((_, rows, _))) = rowstream::client::export::read_state(&state) {
            if rows >= at_rows {
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "exporter stuck");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (_, rows, bytes) = rowstream::client::export::read_state(&state)
        .unwrap()
        .unwrap();
    let partial_len = std::fs::metadata(files::partial(out)).unwrap().len();
    assert!(partial_len >= bytes, "{partial_len} < {bytes}");
    Some(rows)
}

#[test]
fn kill_9_then_rerun_gives_the_identical_file() {
    const ROWS: i64 = 30_000;
    let f = fixture(ROWS);
    let url = f.url();
    let s = seed();
    eprintln!("seed {s}");
    let mut rng = Rng(s);
    for (shape, format) in [
        ("object", "ndjson"),
        ("array", "ndjson"),
        ("object", "csv"),
        ("array", "csv"),
    ] {
        let reference = f.dir.path(&format!("ref-{shape}.{format}"));
        ok(&export(&[
            "--server",
            &url,
            "--query",
            Q,
            "--shape",
            shape,
            "--format",
            format,
            "--quiet",
            "-o",
            reference.to_str().unwrap(),
        ]));
        let expected = read(&reference);
        // Several cut points per combination, in one run each (kill, rerun).
        for round in 0..2 {
            let out = f.dir.path(&format!("out-{shape}-{round}.{format}"));
            let o = out.to_str().unwrap();
            let args = [
                "--server", &url, "--query", Q, "--shape", shape, "--format", format, "-o", o,
            ];
            let mut at = 1 + rng.below(ROWS as u64 * 6 / 10);
            let first = loop {
                if let Some(r) = kill_at(&args, &out, at) {
                    break r;
                }
                // It finished before the cut point: try an earlier one.
                std::fs::remove_file(&out).unwrap();
                assert!(at > 1, "the exporter never ran long enough to be killed");
                at /= 4;
            };
            // Killed twice in a row sometimes: the second run resumes, is
            // killed too, the third finishes.
            let mut recorded = vec![first];
            if rng.below(2) == 0 {
                let at2 = first + 1 + rng.below((ROWS as u64 - first) / 2);
                if let Some(second) = kill_at(&args, &out, at2) {
                    recorded.push(second);
                }
            }
            let rerun = export(&args);
            ok(&rerun);
            assert!(
                stderr(&rerun)
                    .contains(&format!("continued from row {}", recorded.last().unwrap())),
                "{}",
                stderr(&rerun)
            );
            assert!(
                read(&out) == expected,
                "{shape}/{format}: the resumed file differs (cuts at {recorded:?}, seed {s})"
            );
            assert!(!files::partial(&out).exists() && !files::state(&out).exists());
            let resumed = resumed_after_rows(&f.audit);
            for r in &recorded {
                assert!(
                    resumed.contains(r),
                    "no stream.resumed with after_rows {r} in {resumed:?}"
                );
            }
        }
    }
}

#[test]
fn a_dropping_proxy_cuts_the_stream_several_times_and_the_export_still_verifies() {
    // Identity, with cuts in row bytes; and compressed (zstd, as the server
    // picks from the client's Accept-Encoding), with cuts in its smaller body.
    for (identity, cuts) in [
        (true, vec![30_000, 90_000, 45_000, 200_000, 5_000]),
        (false, vec![30_000, 20_000, 15_000, 25_000, 5_000]),
    ] {
        cut_and_verify(identity, cuts);
    }
}

fn cut_and_verify(identity: bool, cuts: Vec<u64>) {
    let f = fixture(20_000);
    let expected = server_rows(f.server.addr, Q);
    let proxy = if identity {
        Proxy::start_identity(f.server.addr, ProxyMode::Cut(cuts))
    } else {
        Proxy::start(f.server.addr, ProxyMode::Cut(cuts))
    };
    let out = f.dir.path("cut.ndjson");
    let o = export(&[
        "--server",
        &proxy.url(),
        "--query",
        Q,
        "-o",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "the proxy cut only {} times",
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst)
    );
    let text = String::from_utf8(read(&out)).unwrap();
    assert!(
        text == expected
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>()
    );
    assert!(stderr(&o).contains("resume requests"), "{}", stderr(&o));
    assert!(resumed_after_rows(&f.audit).len() >= 4);
    // It asks for every encoding it decodes.
    let reqs = proxy.requests.lock().unwrap();
    let first = reqs
        .iter()
        .find(|r| r.contains("/v1/query/stream"))
        .unwrap();
    let ae = first
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("accept-encoding:"))
        .unwrap_or_else(|| panic!("no Accept-Encoding in {first}"))
        .to_ascii_lowercase();
    for enc in ["gzip", "br", "zstd"] {
        assert!(ae.contains(enc), "{ae}");
    }
}

#[test]
fn a_tampered_byte_fails_with_the_digest_mismatch_code_and_writes_no_file() {
    let f = fixture(3_000);
    // Flips the lowest bit of the first digit of row 1's name ("name 1" → "name 0").
    // Identity: a tamperer that rewrites row bytes (a flipped compressed
    // byte is a broken body instead: resumed, see the cut test).
    let proxy = Proxy::start_identity(f.server.addr, ProxyMode::Tamper(b"\"name ".to_vec()));
    for format in ["ndjson", "csv"] {
        let out = f.dir.path(&format!("t.{format}"));
        let o = export(&[
            "--server",
            &proxy.url(),
            "--query",
            Q,
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code(&o), CODE_DIGEST_MISMATCH, "{}", stderr(&o));
        assert!(stderr(&o).contains("digest"), "{}", stderr(&o));
        assert!(!out.exists() && !files::partial(&out).exists() && !files::state(&out).exists());
    }
    assert!(proxy.tampered.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[test]
fn a_restarted_server_makes_the_rerun_not_resumable_until_restart() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_rich_db(&db, 30_000);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let server = serve(&dir, &db, &listen, &[]);
    let reference = dir.path("ref.ndjson");
    ok(&export(&[
        "--server",
        &url,
        "--query",
        Q,
        "--quiet",
        "-o",
        reference.to_str().unwrap(),
    ]));
    let out = dir.path("out.ndjson");
    let args = ["--server", &url, "--query", Q, "-o", out.to_str().unwrap()];
    kill_at(&args, &out, 5_000).expect("killed mid-way");
    drop(server);
    let _server = serve(&dir, &db, &listen, &[]);

    let o = export(&args);
    assert_eq!(code(&o), CODE_NOT_RESUMABLE, "{}", stderr(&o));
    assert!(stderr(&o).contains("cursor_not_found"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
    assert!(
        !out.exists() && files::partial(&out).exists(),
        "the partial file is kept"
    );

    let mut with_restart = args.to_vec();
    with_restart.push("--restart");
    let o = export(&with_restart);
    ok(&o);
    assert!(stderr(&o).contains("starting over"), "{}", stderr(&o));
    assert!(read(&out) == read(&reference));
}

#[test]
fn refusals_existing_files_and_help() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let server = ServerProcess::start(
        [
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--token",
            "s3cret=default:alice",
        ],
        false,
    );
    let url = format!("http://{}", server.addr);
    let out = dir.path("t.ndjson");
    let o = export(&[
        "--server",
        &url,
        "--query",
        "SELECT * FROM t",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), CODE_REFUSED, "{}", stderr(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    assert!(!files::partial(&out).exists() && !files::state(&out).exists());

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
        .env("ROWSTREAM_TOKEN", "s3cret")
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(read(&out).iter().filter(|b| **b == b'\n').count(), 10);

    let again = [
        "--server",
        &url,
        "--token",
        "s3cret",
        "--query",
        "SELECT id FROM t",
        "-o",
        out.to_str().unwrap(),
    ];
    let o = export(&again);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let mut forced = again.to_vec();
    forced.push("--force");
    ok(&export(&forced));
    assert_eq!(
        String::from_utf8(read(&out)).unwrap().lines().next(),
        Some("{\"id\":1}")
    );

    let o = export(&[
        "--server",
        &url,
        "--token",
        "s3cret",
        "--query",
        "DELETE FROM t",
        "-o",
        dir.path("d").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), CODE_REFUSED);
    assert!(
        stderr(&o).contains("stream_unsupported_statement"),
        "{}",
        stderr(&o)
    );

    // Without -o the rows go to stdout.
    let o = export(&[
        "--server",
        &url,
        "--token",
        "s3cret",
        "--query",
        "SELECT id FROM t WHERE id < 3",
        "--shape",
        "array",
        "--quiet",
    ]);
    ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "[1]\n[2]\n");
    assert!(stderr(&o).is_empty(), "--quiet: {}", stderr(&o));

    let help = Command::new(BIN)
        .args(["export", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--server",
        "--query",
        "--params",
        "--shape",
        "--format",
        "--token",
        "ROWSTREAM_TOKEN",
        "--restart",
        "--quiet",
        "--force",
        "--count",
        "Exit codes",
        "digest mismatch",
        "NOT escaped",
        "FILE.partial",
    ] {
        assert!(text.contains(needle), "export --help lacks {needle}");
    }
}

#[test]
fn ctrl_c_saves_the_state_exits_interrupted_and_a_rerun_finishes_the_same_file() {
    const ROWS: i64 = 40_000;
    let f = fixture(ROWS);
    let url = f.url();
    let reference = f.dir.path("ref.ndjson");
    ok(&export(&[
        "--server",
        &url,
        "--query",
        Q,
        "--quiet",
        "-o",
        reference.to_str().unwrap(),
    ]));
    let out = f.dir.path("int.ndjson");
    let o = out.to_str().unwrap();
    let args = ["--server", &url, "--query", Q, "-o", o];
    let mut child = Command::new(BIN)
        .arg("export")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = files::state(&out);
    let t = Instant::now();
    loop {
        if let Ok(Some((_, rows, _))) = rowstream::client::export::read_state(&state) {
            if rows >= 1000 {
                break;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the interrupt"
        );
        assert!(t.elapsed() < Duration::from_secs(60), "exporter stuck");
        std::thread::sleep(Duration::from_millis(1));
    }
    // What a terminal's Ctrl+C sends.
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(CODE_INTERRUPTED), "{err}");
    assert!(!out.exists(), "an interrupted export must not leave FILE");
    let (_, rows, bytes) = rowstream::client::export::read_state(&state)
        .unwrap()
        .expect("the state was saved");
    assert!(rows >= 1000 && rows < ROWS as u64, "{rows}");
    assert!(std::fs::metadata(files::partial(&out)).unwrap().len() >= bytes);
    let rerun = export(&args);
    ok(&rerun);
    assert!(
        stderr(&rerun).contains("continued from row"),
        "{}",
        stderr(&rerun)
    );
    assert!(read(&out) == read(&reference), "the resumed file differs");
    assert!(!files::partial(&out).exists() && !state.exists());
}
