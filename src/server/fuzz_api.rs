//! Request-body parsing exactly as the routes do it, and the SQLite row
//! writer, exposed (hidden from the docs) for the cargo-fuzz targets in
//! `fuzz/`: the route types are private, and the targets do not link rusqlite.

use std::cell::RefCell;

use super::routes::{CancelBody, FreshBody, ResumeBody};
use rusqlite::types::ValueRef;

use super::sql::{bind_params, Params, RowWriter, Shape};
use crate::core::digest::is_hex_of_len;
use crate::core::protocol::Column;
use crate::core::protocol::ErrorCode;

/// What a body parsed as.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedBody {
    /// A fresh `POST /v1/query/stream`.
    Fresh,
    /// A resume.
    Resume,
    /// A `POST /v1/query/stream/cancel`.
    Cancel,
}

thread_local! {
    static CONN: RefCell<Option<rusqlite::Connection>> = const { RefCell::new(None) };
}

/// Parses `bytes` as the body of `/v1/query/stream` (`cancel` = false) or of
/// `/cancel`, with the route's checks, and binds any `params` to a small
/// in-memory statement (`SELECT ?1, ?2, ?3` or `SELECT :a, @b, $c`). Returns
/// the refusal code the route would answer with.
#[doc(hidden)]
pub fn parse_request_body(bytes: &[u8], cancel: bool) -> Result<ParsedBody, ErrorCode> {
    if bytes.len() > super::MAX_REQUEST_BODY {
        return Err(ErrorCode::PayloadTooLarge);
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| ErrorCode::BadRequest)?;
    if !value.is_object() {
        return Err(ErrorCode::BadRequest);
    }
    if cancel {
        serde_json::from_value::<CancelBody>(value).map_err(|_| ErrorCode::BadRequest)?;
        return Ok(ParsedBody::Cancel);
    }
    if value.get("cursor").is_some() {
        let prefix_ok = value
            .get("prefix_hash")
            .and_then(|v| v.as_str())
            .is_some_and(|h| is_hex_of_len(h, 64));
        serde_json::from_value::<ResumeBody>(value).map_err(|_| ErrorCode::BadRequest)?;
        return if prefix_ok {
            Ok(ParsedBody::Resume)
        } else {
            Err(ErrorCode::BadRequest)
        };
    }
    let params = value.get("params").cloned();
    serde_json::from_value::<FreshBody>(value).map_err(|_| ErrorCode::BadRequest)?;
    // `FreshBody` accepted the params, so they parse as `Params` on their own.
    let params: Option<Params> = match params {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(serde_json::from_value(p).map_err(|_| ErrorCode::BadRequest)?),
    };
    CONN.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = rusqlite::Connection::open_in_memory().ok();
        }
        let Some(conn) = c.as_ref() else {
            return Ok(ParsedBody::Fresh);
        };
        let sql = match &params {
            Some(Params::Named(_)) => "SELECT :a, @b, $c",
            _ => "SELECT ?1, ?2, ?3",
        };
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(|_| ErrorCode::InternalError)?;
        let bound = bind_params(&mut stmt, params.as_ref());
        stmt.clear_bindings();
        match bound {
            Ok(()) => Ok(ParsedBody::Fresh),
            Err(b) => Err(ErrorCode::parse(&b.code).unwrap_or(ErrorCode::InternalError)),
        }
    })
}

/// One SQLite value, as the row writer reads it (`ValueRef` without rusqlite).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum SqlValue<'a> {
    /// NULL.
    Null,
    /// INTEGER.
    Integer(i64),
    /// REAL.
    Real(f64),
    /// TEXT: any bytes (SQLite does not promise valid UTF-8).
    Text(&'a [u8]),
    /// BLOB.
    Blob(&'a [u8]),
}

/// Writes one row exactly as the SQLite backend does: a [`RowWriter`] for
/// columns with these names, shape `object` or `array`.
#[doc(hidden)]
pub fn write_sqlite_row(names: &[String], values: &[SqlValue<'_>], object: bool) -> Vec<u8> {
    let columns: Vec<Column> = names
        .iter()
        .map(|n| Column {
            name: n.clone(),
            decl_type: String::new(),
        })
        .collect();
    let shape = if object { Shape::Object } else { Shape::Array };
    let mut out = Vec::new();
    RowWriter::new(&columns, shape).write_values(
        values.iter().map(|v| match *v {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(i),
            SqlValue::Real(f) => ValueRef::Real(f),
            SqlValue::Text(t) => ValueRef::Text(t),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_findings_stay_fixed() {
        // serde reads a struct from an array: `["<cursor>"]` must not be a
        // cancel body (found by the `request_body` target).
        assert_eq!(
            parse_request_body(br#"[""]"#, true),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            parse_request_body(br#"{"cursor":"ab"}"#, true),
            Ok(ParsedBody::Cancel)
        );
        assert_eq!(
            parse_request_body(br#"{"query":"SELECT 1","params":[[1],2,3]}"#, false),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            parse_request_body(br#"{"query":"SELECT 1","params":[1,2,3]}"#, false),
            Ok(ParsedBody::Fresh)
        );
    }
}
