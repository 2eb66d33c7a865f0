//! The read path refuses anything that could write, and does not execute it.
#![cfg(feature = "server")]

mod server_common;

use server_common::*;

fn fingerprint(c: &rusqlite::Connection) -> (i64, String, i64, i64, String) {
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let names: String = c
        .query_row(
            "SELECT group_concat(name, ',') FROM (SELECT name FROM t ORDER BY id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let uv: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let objects: i64 = c
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    let schema: String = c
        .query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_schema",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (n, names, uv, objects, schema)
}

#[test]
fn write_statements_are_refused_and_not_executed() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 5);
    let before = fingerprint(&c);
    let ts = TestServer::start(builder_for(&db));
    let attached = dir.path("other.sqlite");
    let vacuum_into = dir.path("copy.sqlite");
    let statements = [
        "INSERT INTO t(name) VALUES ('x')".to_string(),
        "INSERT INTO t(name) VALUES ('x') RETURNING id".to_string(),
        "UPDATE t SET name = 'y'".to_string(),
        "DELETE FROM t".to_string(),
        "DELETE FROM t RETURNING *".to_string(),
        "WITH x AS (SELECT 1) DELETE FROM t".to_string(),
        "REPLACE INTO t(id, name) VALUES (1, 'z')".to_string(),
        "CREATE TABLE u(a)".to_string(),
        "CREATE TEMP TABLE u(a)".to_string(),
        "CREATE VIEW w AS SELECT 1".to_string(),
        "CREATE INDEX i ON t(name)".to_string(),
        "DROP TABLE t".to_string(),
        "ALTER TABLE t ADD COLUMN z".to_string(),
        format!("ATTACH '{}' AS o", attached.display()),
        "DETACH main".to_string(),
        "PRAGMA user_version = 7".to_string(),
        "PRAGMA journal_mode = DELETE".to_string(),
        "PRAGMA query_only = 0".to_string(),
        "PRAGMA writable_schema = 1".to_string(),
        "PRAGMA wal_checkpoint(TRUNCATE)".to_string(),
        "PRAGMA optimize".to_string(),
        "VACUUM".to_string(),
        format!("VACUUM INTO '{}'", vacuum_into.display()),
        "REINDEX".to_string(),
        "ANALYZE".to_string(),
        "BEGIN".to_string(),
        "BEGIN IMMEDIATE".to_string(),
        "SAVEPOINT a".to_string(),
        "SELECT 1; DELETE FROM t".to_string(),
        "SELECT * FROM t; SELECT 2".to_string(),
        "SELECT load_extension('/nonexistent')".to_string(),
        "CREATE VIRTUAL TABLE f USING fts5(a)".to_string(),
    ];
    for sql in &statements {
        let r = query(ts.addr(), sql);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "stream_unsupported_statement"),
            "{sql}: {}",
            r.text()
        );
        assert_eq!(fingerprint(&c), before, "{sql} changed the database");
    }
    assert!(!attached.exists(), "ATTACH created a file");
    assert!(!vacuum_into.exists(), "VACUUM INTO wrote a file");
    // Reads of allowed pragmas and plain selects still work.
    for sql in [
        "SELECT * FROM t",
        "PRAGMA user_version",
        "SELECT * FROM pragma_table_info('t')",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x FROM c",
        "VALUES (1, 2)",
    ] {
        let r = query(ts.addr(), sql);
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
    }
    assert_eq!(fingerprint(&c), before);
    // After a refused statement, pooled connections are still read-only.
    let r = query(ts.addr(), "SELECT name FROM t ORDER BY id LIMIT 1");
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"name":"n1"}}"#]);
}
