//! Input streams (PROTOCOL.md §4): parsing and verifying the NDJSON a client
//! uploads, independent of where the rows are written.
//!
//! An [`IngestParser`] takes the body's lines in order (from an
//! [`NdjsonFramer`](super::framer::NdjsonFramer)):
//!
//! 1. `{"open":{"table":"t","columns":["a","b"],"verify":"sha256"|"none"}}`
//! 2. `{"row":{"a":1,"b":"x"}}` ... — missing columns are NULL; an unknown
//!    column is an error naming its line;
//! 3. `{"end":{"sha256":"<64 hex>"}}` — required when `verify` is `sha256`,
//!    the digest of §2.1 over the row lines as sent.
//!
//! Values keep their JSON types: integers that fit `i64` are [`IngestValue::Integer`],
//! other numbers [`IngestValue::Real`], strings [`IngestValue::Text`], `null` is
//! [`IngestValue::Null`], `true`/`false` are the integers 1/0 (SQLite has no
//! boolean), and objects and arrays are stored as their JSON text.

use serde::Deserialize;
use thiserror::Error;

use super::config::VerifyMode;
use super::digest::{is_hex_of_len, PrefixHasher};
use super::protocol::{ErrorBody, ErrorCode};

/// The `open` line of an input stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestOpen {
    /// Target table.
    pub table: String,
    /// Columns rows may name, in binding order.
    pub columns: Vec<String>,
    /// Verification mode; the config default when absent.
    #[serde(default)]
    pub verify: Option<VerifyMode>,
}

/// One value to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestValue {
    /// SQL NULL.
    Null,
    /// 64-bit integer.
    Integer(i64),
    /// Double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
}

/// What a line was.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// The open line, with the verify mode in force.
    Open(IngestOpen),
    /// A row's values in `open.columns` order.
    Row(Vec<IngestValue>),
    /// The end line passed its checks.
    End {
        /// Rows received.
        row_count: u64,
        /// Whether a digest was checked (`ok`) or not (`unchecked`).
        verified: bool,
    },
}

/// A refused input stream. Every variant names the line it is about.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum IngestError {
    /// The body broke the framing of §4 (no open first, lines after end, ...).
    #[error("line {line}: {message}")]
    BadRequest {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A row line is malformed.
    #[error("line {line}: invalid row: {message}")]
    InvalidRow {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A row names a column not in `open.columns`.
    #[error("line {line}: unknown column {column:?}")]
    UnknownColumn {
        /// 1-based line.
        line: u64,
        /// The column.
        column: String,
    },
    /// `verify: sha256` but the end line has no digest.
    #[error("line {line}: verify is sha256 but end has no sha256")]
    IntegrityMissingDigest {
        /// 1-based line.
        line: u64,
    },
    /// The digest does not match the rows sent.
    #[error("line {line}: digest mismatch")]
    IntegrityFailed {
        /// 1-based line.
        line: u64,
        /// What the client sent.
        expected: String,
        /// What the rows hash to.
        actual: String,
    },
}

impl IngestError {
    /// The protocol code.
    pub fn code(&self) -> ErrorCode {
        match self {
            IngestError::BadRequest { .. } => ErrorCode::BadRequest,
            IngestError::InvalidRow { .. } => ErrorCode::InvalidRow,
            IngestError::UnknownColumn { .. } => ErrorCode::UnknownColumn,
            IngestError::IntegrityMissingDigest { .. } => ErrorCode::IntegrityMissingDigest,
            IngestError::IntegrityFailed { .. } => ErrorCode::IntegrityFailed,
        }
    }

    /// The line the error is about.
    pub fn line(&self) -> u64 {
        match self {
            IngestError::BadRequest { line, .. }
            | IngestError::InvalidRow { line, .. }
            | IngestError::UnknownColumn { line, .. }
            | IngestError::IntegrityMissingDigest { line }
            | IngestError::IntegrityFailed { line, .. } => *line,
        }
    }

    /// The wire body, with `line` (and `expected`/`actual` for digests).
    pub fn to_body(&self) -> ErrorBody {
        let mut b = ErrorBody::new(self.code(), self.to_string()).with("line", self.line());
        if let IngestError::IntegrityFailed {
            expected, actual, ..
        } = self
        {
            b = b
                .with("expected", expected.as_str())
                .with("actual", actual.as_str());
        }
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Open,
    Rows,
    Done,
}

/// State machine over an input stream's lines. See the module docs.
#[derive(Debug, Clone)]
pub struct IngestParser {
    expect: Expect,
    default_verify: VerifyMode,
    verify: VerifyMode,
    columns: Vec<String>,
    hasher: PrefixHasher,
    line: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    #[serde(default)]
    sha256: Option<String>,
}

impl IngestParser {
    /// A parser that applies `default_verify` when `open` omits `verify`.
    pub fn new(default_verify: VerifyMode) -> Self {
        Self {
            expect: Expect::Open,
            default_verify,
            verify: default_verify,
            columns: Vec::new(),
            hasher: PrefixHasher::new(),
            line: 0,
        }
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.hasher.rows()
    }

    /// Whether the end line was accepted.
    pub fn is_done(&self) -> bool {
        self.expect == Expect::Done
    }

    /// The verify mode in force.
    pub fn verify(&self) -> VerifyMode {
        self.verify
    }

    /// Columns of the open line.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Takes the next non-blank line (as framed, without newline). `line_no`
    /// is the line's 1-based number in the body (blank lines counted).
    pub fn accept(&mut self, line: &str, line_no: u64) -> Result<IngestEvent, IngestError> {
        self.line = line_no;
        let bad = |message: String| IngestError::BadRequest {
            line: line_no,
            message,
        };
        if self.expect == Expect::Done {
            return Err(bad("a line after end".into()));
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            if self.expect == Expect::Rows {
                IngestError::InvalidRow {
                    line: line_no,
                    message: format!("not JSON: {e}"),
                }
            } else {
                bad(format!("not JSON: {e}"))
            }
        })?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(self.shape_error("a line must be a JSON object"));
        };
        if obj.len() != 1 {
            return Err(self.shape_error("a line must be a single-key object"));
        }
        let (key, inner) = obj
            .iter_mut()
            .next()
            .map(|(k, v)| (k.clone(), v.take()))
            .expect("one key");
        match (self.expect, key.as_str()) {
            (Expect::Open, "open") => {
                // serde would also read a struct from an array (`["t",["a"]]`).
                if !inner.is_object() {
                    return Err(bad("open must be an object".into()));
                }
                let open: IngestOpen =
                    serde_json::from_value(inner).map_err(|e| bad(format!("invalid open: {e}")))?;
                if open.columns.is_empty() {
                    return Err(bad("open.columns is empty".into()));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = open.columns.iter().find(|c| !seen.insert(c.as_str())) {
                    return Err(bad(format!("column {dup:?} is named twice")));
                }
                self.verify = open.verify.unwrap_or(self.default_verify);
                self.columns = open.columns.clone();
                self.expect = Expect::Rows;
                Ok(IngestEvent::Open(IngestOpen {
                    verify: Some(self.verify),
                    ..open
                }))
            }
            (Expect::Open, other) => {
                Err(bad(format!("the first line must be open, not {other:?}")))
            }
            (Expect::Rows, "row") => {
                let values = self.row_values(inner)?;
                self.hasher.update_line(line.as_bytes());
                Ok(IngestEvent::Row(values))
            }
            (Expect::Rows, "end") => {
                if !inner.is_object() {
                    return Err(bad("end must be an object".into()));
                }
                let end: EndLine =
                    serde_json::from_value(inner).map_err(|e| bad(format!("invalid end: {e}")))?;
                let actual = self.hasher.hex_digest();
                let verified = match (self.verify, end.sha256) {
                    (VerifyMode::Sha256, None) => {
                        return Err(IngestError::IntegrityMissingDigest { line: line_no })
                    }
                    (_, Some(expected)) => {
                        if !is_hex_of_len(&expected, 64) || !self.hasher.matches_hex(&expected) {
                            return Err(IngestError::IntegrityFailed {
                                line: line_no,
                                expected,
                                actual,
                            });
                        }
                        true
                    }
                    (VerifyMode::None, None) => false,
                };
                self.expect = Expect::Done;
                Ok(IngestEvent::End {
                    row_count: self.rows(),
                    verified,
                })
            }
            (Expect::Rows, "open") => Err(bad("a second open line".into())),
            (Expect::Rows, other) => Err(bad(format!("unknown line type {other:?}"))),
            (Expect::Done, _) => unreachable!("checked above"),
        }
    }

    /// The error for the stream ending now: fine after `end`, otherwise the
    /// body was cut off.
    pub fn finish(&self) -> Result<(), IngestError> {
        match self.expect {
            Expect::Done => Ok(()),
            Expect::Open => Err(IngestError::BadRequest {
                line: self.line,
                message: "empty body: no open line".into(),
            }),
            Expect::Rows => Err(IngestError::BadRequest {
                line: self.line,
                message: "the body ended without an end line".into(),
            }),
        }
    }

    fn shape_error(&self, message: &str) -> IngestError {
        if self.expect == Expect::Rows {
            IngestError::InvalidRow {
                line: self.line,
                message: message.into(),
            }
        } else {
            IngestError::BadRequest {
                line: self.line,
                message: message.into(),
            }
        }
    }

    fn row_values(&self, row: serde_json::Value) -> Result<Vec<IngestValue>, IngestError> {
        let line = self.line;
        let serde_json::Value::Object(map) = row else {
            return Err(IngestError::InvalidRow {
                line,
                message: "row must be an object".into(),
            });
        };
        let mut values = vec![IngestValue::Null; self.columns.len()];
        for (k, v) in map {
            let Some(i) = self.columns.iter().position(|c| *c == k) else {
                return Err(IngestError::UnknownColumn { line, column: k });
            };
            values[i] = to_value(v);
        }
        Ok(values)
    }
}

fn to_value(v: serde_json::Value) -> IngestValue {
    use serde_json::Value;
    match v {
        Value::Null => IngestValue::Null,
        Value::Bool(b) => IngestValue::Integer(b as i64),
        Value::Number(n) => match n.as_i64() {
            Some(i) => IngestValue::Integer(i),
            None => IngestValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => IngestValue::Text(s),
        other => IngestValue::Text(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::prefix_hash_of;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const OPEN: &str = r#"{"open":{"table":"t","columns":["a","b"],"verify":"sha256"}}"#;

    fn run(lines: &[&str]) -> Result<Vec<IngestEvent>, IngestError> {
        let mut p = IngestParser::new(VerifyMode::None);
        let events = lines
            .iter()
            .enumerate()
            .map(|(i, l)| p.accept(l, i as u64 + 1))
            .collect::<Result<Vec<_>, _>>()?;
        p.finish()?;
        Ok(events)
    }

    #[test]
    fn verified_round_trip_with_types() {
        let rows = [
            r#"{"row":{"a":1,"b":"x"}}"#,
            r#"{"row":{"b":2.5}}"#,
            r#"{"row":{"a":9223372036854775807,"b":true}}"#,
        ];
        let end = format!(r#"{{"end":{{"sha256":"{}"}}}}"#, prefix_hash_of(rows));
        let events = run(&[OPEN, rows[0], rows[1], rows[2], &end]).unwrap();
        assert_eq!(
            events[1],
            IngestEvent::Row(vec![IngestValue::Integer(1), IngestValue::Text("x".into())])
        );
        assert_eq!(
            events[2],
            IngestEvent::Row(vec![IngestValue::Null, IngestValue::Real(2.5)])
        );
        assert_eq!(
            events[3],
            IngestEvent::Row(vec![
                IngestValue::Integer(i64::MAX),
                IngestValue::Integer(1)
            ])
        );
        assert_eq!(
            events[4],
            IngestEvent::End {
                row_count: 3,
                verified: true
            }
        );
    }

    #[test]
    fn digest_mismatch_and_missing_digest() {
        let err = run(&[
            OPEN,
            r#"{"row":{"a":1}}"#,
            &format!(r#"{{"end":{{"sha256":"{}"}}}}"#, "0".repeat(64)),
        ])
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrityFailed);
        let body = err.to_body();
        assert_eq!(body.extra["expected"], "0".repeat(64));
        assert_eq!(body.extra["actual"], prefix_hash_of([r#"{"row":{"a":1}}"#]));
        assert_eq!(body.extra["line"], 3);
        let err = run(&[OPEN, r#"{"end":{}}"#]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrityMissingDigest);
    }

    #[test]
    fn default_verify_applies_when_open_omits_it() {
        let open = r#"{"open":{"table":"t","columns":["a"]}}"#;
        assert_eq!(
            run(&[open, r#"{"end":{}}"#]).unwrap()[1],
            IngestEvent::End {
                row_count: 0,
                verified: false
            }
        );
        let mut strict = IngestParser::new(VerifyMode::Sha256);
        strict.accept(open, 1).unwrap();
        assert_eq!(
            strict.accept(r#"{"end":{}}"#, 2).unwrap_err().code(),
            ErrorCode::IntegrityMissingDigest
        );
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = run(&[OPEN, r#"{"row":{"a":1}}"#, "{\"row\":", r#"{"end":{}}"#]).unwrap_err();
        assert_eq!((err.code(), err.line()), (ErrorCode::InvalidRow, 3));
        let err = run(&[OPEN, r#"{"row":{"zz":1}}"#]).unwrap_err();
        assert_eq!(
            err,
            IngestError::UnknownColumn {
                line: 2,
                column: "zz".into()
            }
        );
        let err = run(&[OPEN, r#"{"row":[1,2]}"#]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRow);
        assert_eq!(
            run(&[r#"{"row":{}}"#]).unwrap_err().code(),
            ErrorCode::BadRequest
        );
        assert_eq!(
            run(&[OPEN]).unwrap_err().code(),
            ErrorCode::BadRequest,
            "cut off before end"
        );
        assert_eq!(run(&[]).unwrap_err().code(), ErrorCode::BadRequest);
        let dup = r#"{"open":{"table":"t","columns":["a","a"]}}"#;
        assert_eq!(run(&[dup]).unwrap_err().code(), ErrorCode::BadRequest);
        let extra = r#"{"open":{"table":"t","columns":["a"],"mode":"x"}}"#;
        assert_eq!(run(&[extra]).unwrap_err().code(), ErrorCode::BadRequest);
        let as_array = r#"{"open":["t",["a"],"none"]}"#;
        assert_eq!(run(&[as_array]).unwrap_err().code(), ErrorCode::BadRequest);
        let end_array = format!(r#"{{"end":["{}"]}}"#, "0".repeat(64));
        assert_eq!(
            run(&[OPEN, &end_array]).unwrap_err().code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn nothing_after_end() {
        let mut p = IngestParser::new(VerifyMode::None);
        p.accept(OPEN.replace("sha256", "none").as_str(), 1)
            .unwrap();
        p.accept(r#"{"end":{}}"#, 2).unwrap();
        assert!(p.is_done());
        assert_eq!(
            p.accept(r#"{"row":{"a":1}}"#, 3).unwrap_err().code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn objects_and_arrays_are_stored_as_json_text() {
        let open = r#"{"open":{"table":"t","columns":["j"],"verify":"none"}}"#;
        let events = run(&[open, r#"{"row":{"j":{"k":[1,2]}}}"#, r#"{"end":{}}"#]).unwrap();
        assert_eq!(
            events[1],
            IngestEvent::Row(vec![IngestValue::Text(r#"{"k":[1,2]}"#.into())])
        );
    }
}
