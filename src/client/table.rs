//! Rows to RFC 4180 CSV, as `rowstream export --format csv` writes them.
//!
//! A header row from `open.columns`, then one record per row, CRLF line
//! ends. NULL is an empty field and an empty string is `""` (the
//! distinction PostgreSQL's `COPY … CSV` makes); text is written unmodified
//! (quoted when it holds `,`, `"`, CR or LF); numbers, booleans and nested
//! JSON as the server's JSON text; BLOBs arrive as base64 strings and stay
//! so. Formula-like text (`=…`, `+…`) is not escaped.

use std::collections::HashMap;
use std::io::Write;

use serde_json::value::RawValue;

use super::Shape;
use crate::core::protocol::{ClientError, Column};

/// Writes rows of one shape as CSV records.
#[derive(Debug)]
pub(crate) struct CsvWriter {
    columns: Vec<String>,
    shape: Shape,
}

impl CsvWriter {
    pub(crate) fn new(columns: &[Column], shape: Shape) -> CsvWriter {
        CsvWriter {
            columns: columns.iter().map(|c| c.name.clone()).collect(),
            shape,
        }
    }

    /// The header record.
    pub(crate) fn write_header<W: Write>(&self, out: &mut W) -> std::io::Result<()> {
        for (i, name) in self.columns.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write_text(out, name)?;
        }
        out.write_all(b"\r\n")
    }

    /// One row (its JSON value text) as a record.
    pub(crate) fn write_row<W: Write>(
        &mut self,
        out: &mut W,
        row: u64,
        value: &str,
    ) -> Result<(), RowError> {
        let bad = |m: String| {
            RowError::Data(ClientError::Protocol(format!(
                "row {row} cannot be written as CSV: {m}"
            )))
        };
        match self.shape {
            Shape::Array => {
                let values: Vec<&RawValue> =
                    serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
                if values.len() != self.columns.len() {
                    return Err(bad(format!(
                        "{} values for {} columns",
                        values.len(),
                        self.columns.len()
                    )));
                }
                for (i, v) in values.iter().enumerate() {
                    self.write_field(out, i, v)?;
                }
            }
            Shape::Object => {
                let values: HashMap<String, &RawValue> =
                    serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
                for i in 0..self.columns.len() {
                    match values.get(&self.columns[i]) {
                        Some(v) => self.write_field(out, i, v)?,
                        None if i > 0 => out.write_all(b",")?,
                        None => {}
                    }
                }
            }
        }
        out.write_all(b"\r\n")?;
        Ok(())
    }

    fn write_field<W: Write>(&self, out: &mut W, i: usize, v: &RawValue) -> Result<(), RowError> {
        if i > 0 {
            out.write_all(b",")?;
        }
        let text = v.get();
        match text.as_bytes().first() {
            Some(b'n') if text == "null" => {}
            Some(b'"') => {
                let s: String = serde_json::from_str(text).map_err(|e| {
                    RowError::Data(ClientError::Protocol(format!("bad string value: {e}")))
                })?;
                if s.is_empty() {
                    out.write_all(b"\"\"")?;
                } else {
                    write_text(out, &s)?;
                }
            }
            _ => write_text(out, text)?,
        }
        Ok(())
    }
}

/// Why a row could not be written.
#[derive(Debug)]
pub(crate) enum RowError {
    Io(std::io::Error),
    Data(ClientError),
}

impl From<std::io::Error> for RowError {
    fn from(e: std::io::Error) -> Self {
        RowError::Io(e)
    }
}

/// One field, quoted when RFC 4180 needs it.
fn write_text<W: Write>(out: &mut W, s: &str) -> std::io::Result<()> {
    if !s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        return out.write_all(s.as_bytes());
    }
    out.write_all(b"\"")?;
    let mut rest = s;
    while let Some(q) = rest.find('"') {
        out.write_all(&rest.as_bytes()[..=q])?;
        out.write_all(b"\"")?;
        rest = &rest[q + 1..];
    }
    out.write_all(rest.as_bytes())?;
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: (*n).into(),
                decl_type: String::new(),
            })
            .collect()
    }

    #[test]
    fn values_become_rfc4180_fields() {
        let mut w = CsvWriter::new(&cols(&["a", "b,c", "d", "e", "f", "g"]), Shape::Array);
        let mut out = Vec::new();
        w.write_header(&mut out).unwrap();
        w.write_row(
            &mut out,
            0,
            r#"[null,"",  "say \"hi\",\nthen",1.50,{"k":[1,"x"]},"=1+1"]"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",d,e,f,g\r\n,\"\",\"say \"\"hi\"\",\nthen\",1.50,\"{\"\"k\"\":[1,\"\"x\"\"]}\",=1+1\r\n"
        );
        let mut o = CsvWriter::new(&cols(&["x", "y"]), Shape::Object);
        let mut out = Vec::new();
        o.write_row(&mut out, 0, r#"{"y":2,"x":"a"}"#).unwrap();
        assert_eq!(out, b"a,2\r\n");
        assert!(matches!(
            w.write_row(&mut Vec::new(), 3, "[1]"),
            Err(RowError::Data(_))
        ));
    }
}
