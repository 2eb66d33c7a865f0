//! The benchmark table of issue 7, shared by the benches that stream it
//! (`#[path = "common/table.rs"] mod table;`): whichever runs first generates
//! and caches it.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// `t(id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL, created_at
/// TEXT, note TEXT)`: six mixed columns, ~171 bytes of NDJSON per row (10% of
/// `note` NULL). Generated once with one INSERT … SELECT over a recursive CTE
/// (journal off), cached by row count in `cache`.
pub fn ensure_db(cache: &Path, rows: u64) -> PathBuf {
    let path = cache.join(format!("t{rows}.sqlite"));
    if path.exists() {
        return path;
    }
    let t = Instant::now();
    let tmp = cache.join(format!("t{rows}.sqlite.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let c = rusqlite::Connection::open(&tmp).expect("open tmp db");
    c.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;
         CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, score REAL,
                        created_at TEXT, note TEXT);",
    )
    .expect("schema");
    c.execute(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
         INSERT INTO t
         SELECT i, 'Customer ' || i, 'customer.' || i || '@mail.example.com',
                (i * 7919 % 1000003) / 100.0,
                strftime('%Y-%m-%dT%H:%M:%SZ', 1700000000 + i * 37, 'unixepoch'),
                CASE WHEN i % 10 = 0 THEN NULL ELSE 'priority ' || (i % 5) || ', region ' || (i % 13) END
         FROM c",
        [rows as i64],
    )
    .expect("generate rows");
    c.execute_batch("PRAGMA journal_mode=WAL;").expect("wal");
    drop(c);
    std::fs::rename(&tmp, &path).expect("rename db");
    eprintln!(
        "bench: generated {} rows in {:.1} s",
        rows,
        t.elapsed().as_secs_f64()
    );
    path
}
