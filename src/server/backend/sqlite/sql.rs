//! SQLite on the read path: read-only connections, the statement gate, and
//! row encoding straight into JSON bytes.
//!
//! The read-only decision never looks at the SQL text. Three independent
//! checks, all made by SQLite itself while preparing:
//!
//! 1. the connection is opened `SQLITE_OPEN_READ_ONLY` with `query_only` on, so
//!    nothing can write the file even if a check below had a hole;
//! 2. an authorizer (installed for the connection's whole life, so it also
//!    covers automatic re-prepares) allows only reads, functions (but not
//!    `load_extension`), recursive CTEs, transactions (our own `BEGIN`) and an
//!    allow-list of read-only pragmas **without** a value; everything else
//!    (DML, DDL, ATTACH/DETACH, write pragmas, ANALYZE, REINDEX, virtual table
//!    creation, savepoints) is denied at prepare time;
//! 3. the prepared statement must be `sqlite3_stmt_readonly()` and return
//!    columns (which rules out `BEGIN`, `ATTACH` and other statements that
//!    `stmt_readonly` calls read-only because they do not write the file).
//!
//! Several statements are refused through rusqlite's prepare-tail check.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Statement};

use crate::core::protocol::{Column, ErrorBody, ErrorCode};
pub use crate::server::backend::{Params, Shape};

use super::text;

/// Pragmas a streamed query may read (never with a value).
const READ_ONLY_PRAGMAS: &[&str] = &[
    "application_id",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "foreign_key_list",
    "freelist_count",
    "function_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "schema_version",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
];

/// Runs on every read connection the server opens, before the statement gate
/// is installed: register user-defined SQL functions, collations, ...
pub type ConnectionInit = Arc<dyn Fn(&Connection) -> rusqlite::Result<()> + Send + Sync>;

/// Pragmas whose argument names an object to describe (never a new value).
const INTROSPECTION_PRAGMAS: &[&str] = &[
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// A read-only connection plus the flag its authorizer raises on a denial.
pub struct ReadConn {
    /// The connection.
    pub conn: Connection,
    denied: Arc<AtomicBool>,
}

impl std::fmt::Debug for ReadConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConn").finish_non_exhaustive()
    }
}

fn authorize(ctx: AuthContext<'_>, denied: &AtomicBool) -> Authorization {
    let ok = match ctx.action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => true,
        AuthAction::Transaction { .. } => true,
        AuthAction::Function { function_name } => {
            !function_name.eq_ignore_ascii_case("load_extension")
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let listed = |list: &[&str]| list.iter().any(|p| p.eq_ignore_ascii_case(pragma_name));
            if pragma_value.is_none() {
                listed(READ_ONLY_PRAGMAS)
            } else {
                listed(INTROSPECTION_PRAGMAS)
            }
        }
        _ => false,
    };
    if ok {
        Authorization::Allow
    } else {
        denied.store(true, Ordering::SeqCst);
        Authorization::Deny
    }
}

/// Page cache of each read connection, in KiB.
const READ_CACHE_KIB: i64 = 256;

impl ReadConn {
    /// Opens `path` read-only, runs `init` (user functions...), then installs
    /// the statement gate.
    pub fn open(path: &Path, init: Option<&ConnectionInit>) -> rusqlite::Result<ReadConn> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        // A stream reads its table once, front to back: a small page cache
        // does as well as SQLite's 2 MiB default (the OS caches the file),
        // and with one connection per running stream and per pinned cursor
        // the default is most of the server's memory (BENCHMARKS.md, item 4b).
        conn.pragma_update(None, "cache_size", -READ_CACHE_KIB)?;
        if let Some(init) = init {
            init(&conn)?;
        }
        let denied = Arc::new(AtomicBool::new(false));
        let d = denied.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(ctx, &d)));
        Ok(ReadConn { conn, denied })
    }

    /// Prepares a client's query and applies the read-only gate. Nothing is
    /// executed. Errors are the protocol refusals.
    pub fn prepare_checked(&self, sql: &str) -> Result<Statement<'_>, ErrorBody> {
        // SQLite stops compiling at a NUL, silently dropping the rest, while
        // the resumability classifier and the rowid rewrite see the whole
        // text: refuse it instead.
        if sql.contains('\0') {
            return Err(ErrorBody::new(
                ErrorCode::QueryError,
                "the query contains a NUL character",
            ));
        }
        self.denied.store(false, Ordering::SeqCst);
        let prepared = self.conn.prepare(sql);
        let denied = self.denied.swap(false, Ordering::SeqCst);
        let unsupported = |why: &str| {
            ErrorBody::new(
                ErrorCode::StreamUnsupportedStatement,
                format!("only a single read-only query can be streamed: {why}"),
            )
        };
        let stmt = match prepared {
            Ok(s) => s,
            Err(_) if denied => {
                return Err(unsupported(
                    "the statement could write or change the connection",
                ))
            }
            Err(rusqlite::Error::MultipleStatement) => {
                return Err(unsupported("several statements were sent"))
            }
            Err(e) => {
                return Err(ErrorBody::new(ErrorCode::QueryError, sql_error_text(&e)));
            }
        };
        if denied {
            return Err(unsupported(
                "the statement could write or change the connection",
            ));
        }
        if stmt.column_count() == 0 && is_empty_statement(&stmt) {
            return Err(ErrorBody::new(ErrorCode::QueryError, "the query is empty"));
        }
        if !stmt.readonly() {
            return Err(unsupported("the statement writes"));
        }
        if stmt.column_count() == 0 {
            return Err(unsupported("the statement returns no rows"));
        }
        Ok(stmt)
    }
}

fn is_empty_statement(stmt: &Statement<'_>) -> bool {
    stmt.expanded_sql().is_none_or(|s| s.trim().is_empty())
}

/// The message of a SQLite error, without rusqlite's wrapping.
pub fn sql_error_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    }
}

/// Column names and declared types of a prepared statement.
pub fn columns_of(stmt: &Statement<'_>, n: usize) -> Vec<Column> {
    stmt.columns()
        .into_iter()
        .take(n)
        .map(|c| Column {
            name: c.name().to_owned(),
            decl_type: c.decl_type().unwrap_or("").to_owned(),
        })
        .collect()
}

fn to_sql_value(v: &serde_json::Value) -> Result<rusqlite::types::Value, String> {
    use rusqlite::types::Value as V;
    Ok(match v {
        serde_json::Value::Null => V::Null,
        serde_json::Value::Bool(b) => V::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                V::Integer(i)
            } else if let Some(f) = n.as_f64() {
                V::Real(f)
            } else {
                return Err(format!("number {n} is out of range"));
            }
        }
        serde_json::Value::String(s) => V::Text(s.clone()),
        _ => return Err("parameters must be null, booleans, numbers or strings".into()),
    })
}

/// Binds parameters; a count or name mismatch is a `query_error`, a
/// non-scalar value a `bad_request`.
pub fn bind_params(stmt: &mut Statement<'_>, params: Option<&Params>) -> Result<(), ErrorBody> {
    let expected = stmt.parameter_count();
    let qerr = |m: String| ErrorBody::new(ErrorCode::QueryError, m);
    match params {
        None if expected == 0 => Ok(()),
        None => Err(qerr(format!(
            "the query expects {expected} parameters, none were sent"
        ))),
        Some(Params::Positional(values)) => {
            if values.len() != expected {
                return Err(qerr(format!(
                    "the query expects {expected} parameters, {} were sent",
                    values.len()
                )));
            }
            for (i, v) in values.iter().enumerate() {
                let v = to_sql_value(v).map_err(|m| ErrorBody::new(ErrorCode::BadRequest, m))?;
                stmt.raw_bind_parameter(i + 1, v)
                    .map_err(|e| qerr(sql_error_text(&e)))?;
            }
            Ok(())
        }
        Some(Params::Named(map)) => {
            if map.len() != expected {
                return Err(qerr(format!(
                    "the query expects {expected} parameters, {} were sent",
                    map.len()
                )));
            }
            for (name, v) in map {
                let v = to_sql_value(v).map_err(|m| ErrorBody::new(ErrorCode::BadRequest, m))?;
                let idx = if name.starts_with([':', '@', '$']) {
                    stmt.parameter_index(name).ok().flatten()
                } else {
                    [":", "@", "$"]
                        .iter()
                        .find_map(|p| stmt.parameter_index(&format!("{p}{name}")).ok().flatten())
                };
                let Some(idx) = idx else {
                    return Err(qerr(format!("the query has no parameter named {name:?}")));
                };
                stmt.raw_bind_parameter(idx, v)
                    .map_err(|e| qerr(sql_error_text(&e)))?;
            }
            Ok(())
        }
    }
}

/// Precomputed per-column prefixes, so a row is written with no allocation.
#[derive(Debug, Clone)]
pub struct RowWriter {
    shape: Shape,
    /// For objects: `{"a":` then `,"b":` ...; for arrays: `[` then `,`.
    prefixes: Vec<Prefix>,
}

/// One column's prefix. Most fit 16 bytes: those are written as a fixed
/// 16-byte copy (one store) and the surplus cut off again, instead of a
/// `memcpy` call per column and row.
#[derive(Debug, Clone)]
struct Prefix {
    bytes: Vec<u8>,
    padded: Option<[u8; 16]>,
}

impl Prefix {
    fn new(bytes: Vec<u8>) -> Self {
        let padded = (bytes.len() <= 16).then(|| {
            let mut p = [0u8; 16];
            p[..bytes.len()].copy_from_slice(&bytes);
            p
        });
        Prefix { bytes, padded }
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        match &self.padded {
            Some(p) => {
                let len = out.len() + self.bytes.len();
                out.extend_from_slice(p);
                out.truncate(len);
            }
            None => out.extend_from_slice(&self.bytes),
        }
    }
}

impl RowWriter {
    /// A writer for these columns.
    pub fn new(columns: &[Column], shape: Shape) -> Self {
        let prefixes = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut p = Vec::new();
                match shape {
                    Shape::Object => {
                        p.push(if i == 0 { b'{' } else { b',' });
                        write_json_str(&mut p, c.name.as_bytes());
                        p.push(b':');
                    }
                    Shape::Array => p.push(if i == 0 { b'[' } else { b',' }),
                }
                Prefix::new(p)
            })
            .collect();
        RowWriter { shape, prefixes }
    }

    /// Number of columns written.
    pub fn width(&self) -> usize {
        self.prefixes.len()
    }

    /// Writes the row value (object or array) of `row`'s first `width` columns.
    pub fn write(&self, row: &rusqlite::Row<'_>, out: &mut Vec<u8>) {
        if self.prefixes.is_empty() {
            out.extend_from_slice(match self.shape {
                Shape::Object => b"{}",
                Shape::Array => b"[]",
            });
            return;
        }
        for (i, p) in self.prefixes.iter().enumerate() {
            p.write(out);
            write_value(out, row.get_ref(i).unwrap_or(ValueRef::Null));
        }
        out.push(match self.shape {
            Shape::Object => b'}',
            Shape::Array => b']',
        });
    }

    /// Writes a row of generic values (used by the integration module).
    pub fn write_values<'a>(
        &self,
        values: impl IntoIterator<Item = ValueRef<'a>>,
        out: &mut Vec<u8>,
    ) {
        let mut n = 0;
        for (p, v) in self.prefixes.iter().zip(values) {
            p.write(out);
            write_value(out, v);
            n += 1;
        }
        if n == 0 {
            out.push(match self.shape {
                Shape::Object => b'{',
                Shape::Array => b'[',
            });
        }
        out.push(match self.shape {
            Shape::Object => b'}',
            Shape::Array => b']',
        });
    }
}

/// Writes one SQLite value as JSON: INTEGER exact, REAL as the shortest
/// round-tripping JSON number (non-finite → `null`), TEXT as a JSON string
/// (invalid UTF-8 replaced by U+FFFD), BLOB as a standard base64 string,
/// NULL as `null`.
pub fn write_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        ValueRef::Real(f) => write_f64(out, f),
        ValueRef::Text(t) => write_text(out, t),
        ValueRef::Blob(b) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
            let n = STANDARD.encode_slice(b, &mut out[start..]).unwrap_or(0);
            out.truncate(start + n);
            out.push(b'"');
        }
    }
}

/// A float as JSON: the shortest text that parses back to the same bits,
/// which is valid JSON for finite values (`1.0`, `1e-7`, `1e16`, `-0.0`);
/// NaN and infinities become `null`.
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        write_float_text(out, zmij::Buffer::new().format_finite(f));
    } else {
        out.extend_from_slice(b"null");
    }
}

/// [`write_f64`] for a 32-bit float (PostgreSQL's `float4`): the shortest
/// text that parses back to the same `f32`.
pub fn write_f32(out: &mut Vec<u8>, f: f32) {
    if f.is_finite() {
        write_float_text(out, zmij::Buffer::new().format_finite(f));
    } else {
        out.extend_from_slice(b"null");
    }
}

/// zmij writes a positive exponent as `e+16`; rowstream has always written
/// `e16` (ryu's form, which zmij otherwise matches digit for digit), and the
/// prefix digests of results already streamed or exported depend on every
/// byte, so the `+` goes.
#[inline]
fn write_float_text(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    match b.iter().position(|&c| c == b'+') {
        Some(i) => {
            out.extend_from_slice(&b[..i]);
            out.extend_from_slice(&b[i + 1..]);
        }
        None => out.extend_from_slice(b),
    }
}

/// Writes TEXT bytes as a JSON string: valid UTF-8 escaped like
/// `serde_json`, invalid UTF-8 first replaced like `String::from_utf8_lossy`
/// (SQLite does not promise valid UTF-8).
#[inline]
pub fn write_text(out: &mut Vec<u8>, t: &[u8]) {
    if text::is_utf8(t) {
        write_json_str(out, t)
    } else {
        write_json_str(out, String::from_utf8_lossy(t).as_bytes())
    }
}

/// Writes `s` (valid UTF-8) as a JSON string, escaping like `serde_json`.
#[inline]
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    // Most text needs no escape at all: one scan, one copy.
    let i = text::find_escape(s, 0);
    if i == s.len() {
        out.extend_from_slice(s);
    } else {
        write_escaped(out, s, i);
    }
    out.push(b'"');
}

/// The rest of [`write_json_str`] from the first byte to escape, `i`.
#[cold]
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, s: &[u8], mut i: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    while i < s.len() {
        out.extend_from_slice(&s[start..i]);
        let b = s[i];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
        i = text::find_escape(s, start);
    }
    out.extend_from_slice(&s[start..]);
}

/// The runtime configuration table of a tenant database, read into a map
/// (missing table: empty map). Integer and text values are both accepted.
pub fn read_runtime_config(conn: &Connection) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(mut stmt) = conn.prepare("SELECT key, value FROM rowstream_config") else {
        return out;
    };
    let Ok(mut rows) = stmt.query([]) else {
        return out;
    };
    while let Ok(Some(row)) = rows.next() {
        let Ok(key) = row.get::<_, String>(0) else {
            continue;
        };
        let value = match row.get_ref(1) {
            Ok(ValueRef::Integer(i)) => i.to_string(),
            Ok(ValueRef::Real(f)) => f.to_string(),
            Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            _ => continue,
        };
        out.insert(key, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: ValueRef<'_>) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rows_with_short_and_long_column_names_match_serde_json() {
        // Prefixes up to 16 bytes take the padded path, longer ones the
        // plain copy; both shapes.
        let names: Vec<String> = (0..40)
            .map(|n| match n % 3 {
                0 => "c".repeat(n),
                1 => format!("{}\"q", "é".repeat(n / 2)),
                _ => format!("{}\n", "x".repeat(n)),
            })
            .collect();
        let columns: Vec<Column> = names
            .iter()
            .map(|n| Column {
                name: n.clone(),
                decl_type: "TEXT".into(),
            })
            .collect();
        let values: Vec<String> = (0..names.len()).map(|i| format!("v{i}")).collect();
        let refs = || values.iter().map(|v| ValueRef::Text(v.as_bytes()));
        let mut out = Vec::new();
        RowWriter::new(&columns, Shape::Object).write_values(refs(), &mut out);
        let mut expected = serde_json::Map::new();
        for (n, v) in names.iter().zip(&values) {
            expected.insert(n.clone(), serde_json::Value::from(v.as_str()));
        }
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got, serde_json::Value::Object(expected));
        assert_eq!(got.as_object().unwrap().len(), names.len());
        let mut out = Vec::new();
        RowWriter::new(&columns, Shape::Array).write_values(refs(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&values).unwrap()
        );
    }

    #[test]
    fn every_byte_at_every_offset_escapes_like_serde_json() {
        // The word-at-a-time scan must see a byte that needs escaping in any
        // lane, with any neighbours, in strings of any length.
        let specials = (0u8..0x20).chain([b'"', b'\\', 0x7f, b' ', b'~']);
        for b in specials {
            for len in 1..=24 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let s = String::from_utf8(v).unwrap();
                    let mut out = Vec::new();
                    write_json_str(&mut out, s.as_bytes());
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        serde_json::to_string(&s).unwrap(),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        let s = "naïve 日本語 text, long enough for several words \u{1} and \"quotes\"";
        assert_eq!(
            enc(ValueRef::Text(s.as_bytes())),
            serde_json::to_string(s).unwrap()
        );
    }

    #[test]
    fn arbitrary_bytes_write_like_serde_json_of_the_lossy_string() {
        // Random byte strings biased towards what the scans look for:
        // escapes, multi-byte characters, truncated and invalid sequences,
        // at every length around the 16-byte blocks.
        let pieces: [&[u8]; 10] = [
            b"a",
            b"\"",
            b"\\",
            b"\n",
            b"\x01",
            b"\x7f",
            "é".as_bytes(),
            "日".as_bytes(),
            b"\xe6\x97",
            b"\xff",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let n = (next() % 48) as usize;
            let mut t = Vec::new();
            for _ in 0..n {
                t.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            assert_eq!(
                enc(ValueRef::Text(&t)),
                serde_json::to_string(&String::from_utf8_lossy(&t)).unwrap(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn values_encode_like_json() {
        assert_eq!(enc(ValueRef::Integer(i64::MIN)), "-9223372036854775808");
        assert_eq!(enc(ValueRef::Integer(i64::MAX)), "9223372036854775807");
        assert_eq!(enc(ValueRef::Real(1.0)), "1.0");
        assert_eq!(enc(ValueRef::Real(0.1)), "0.1");
        assert_eq!(enc(ValueRef::Real(f64::INFINITY)), "null");
        assert_eq!(enc(ValueRef::Null), "null");
        assert_eq!(enc(ValueRef::Blob(&[0, 1, 255])), "\"AAH/\"");
        assert_eq!(enc(ValueRef::Blob(&[])), "\"\"");
        let s = "é\"\\\n\u{1}\u{7f}日本";
        assert_eq!(
            enc(ValueRef::Text(s.as_bytes())),
            serde_json::to_string(s).unwrap()
        );
        assert_eq!(enc(ValueRef::Text(b"a\xffb")), "\"a\u{fffd}b\"");
        for f in [1e300, -2.5e-300, 123456.789, -0.0] {
            let text = enc(ValueRef::Real(f));
            assert_eq!(text.parse::<f64>().unwrap(), f);
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    }

    /// Floats keep the bytes earlier versions wrote (ryu's shortest form,
    /// `1e16` rather than zmij's `1e+16`): a resumed or re-verified export's
    /// digest covers them.
    #[test]
    fn floats_are_written_byte_for_byte_as_before() {
        let f64s = |f: f64| {
            let mut out = Vec::new();
            write_f64(&mut out, f);
            String::from_utf8(out).unwrap()
        };
        let f32s = |f: f32| {
            let mut out = Vec::new();
            write_f32(&mut out, f);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(f64s(1e16), "1e16");
        assert_eq!(f64s(1e300), "1e300");
        assert_eq!(f64s(-2.5e-300), "-2.5e-300");
        assert_eq!(f64s(f64::MAX), "1.7976931348623157e308");
        assert_eq!(f64s(1e15), "1000000000000000.0");
        assert_eq!(f32s(f32::MAX), "3.4028235e38");
        assert_eq!(f32s(0.1), "0.1");
        assert_eq!(f32s(f32::NAN), "null");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let (mut r64, mut r32) = (ryu::Buffer::new(), ryu::Buffer::new());
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let f = f64::from_bits(state);
            if f.is_finite() {
                assert_eq!(f64s(f), r64.format_finite(f), "{:#x}", state);
            }
            let g = f32::from_bits(state as u32);
            if g.is_finite() {
                assert_eq!(f32s(g), r32.format_finite(g), "{:#x}", state as u32);
            }
        }
    }
}
