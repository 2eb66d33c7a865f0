//! PostgreSQL values, from their binary wire format straight to JSON text.
//!
//! | PostgreSQL | JSON |
//! |---|---|
//! | `smallint`, `integer`, `bigint`, `oid` | exact integer |
//! | `numeric` | exact number literal (`NaN`, `±Infinity` → `null`) |
//! | `real`, `double precision` | shortest round-trip number, non-finite → `null` |
//! | `boolean` | `true` / `false` |
//! | text types, `"char"`, `name`, enums | string |
//! | `bytea` | base64 string |
//! | `json`, `jsonb` | embedded JSON value (whitespace outside strings removed) |
//! | `uuid` | string |
//! | `date` | `"2024-02-29"` |
//! | `time` / `timetz` | `"13:45:00.5"` / `"13:45:00+02:00"` |
//! | `timestamp` | `"2024-02-29T13:45:00.123456"` (no offset) |
//! | `timestamptz` | `"2024-02-29T11:45:00Z"` (UTC) |
//! | `interval` | ISO 8601 duration, `"P1Y2M3DT4H5M6.5S"` |
//! | `inet`, `cidr` | string, as PostgreSQL prints it |
//! | arrays | JSON arrays (nested for several dimensions) |
//! | anything else | PostgreSQL's text output, as a string |
//!
//! Binary values never depend on the session's `TimeZone` or `DateStyle`.
//! Infinite dates and timestamps are the strings `"infinity"` and
//! `"-infinity"`. Years outside 0..=9999 (astronomical numbering: 1 BC is
//! year 0) use ISO 8601's expanded form
//! (`"+10000-01-01"`, `"-0044-03-15"` for 45 BC).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio_postgres::types::{Kind, Type};

use crate::server::sql::{write_f32, write_f64, write_json_str};

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueWriter {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    /// UTF-8 text (text, varchar, bpchar, name, xml, enums, and every type
    /// read through its text output).
    Text,
    /// `"char"`: one byte.
    Char,
    Bytea,
    Json,
    Jsonb,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Inet,
    Array(Box<ValueWriter>),
}

impl ValueWriter {
    /// The writer for `ty`, or `None` when the type has no binary decoder
    /// here (it is then read through its text output).
    pub(crate) fn for_type(ty: &Type) -> Option<ValueWriter> {
        use ValueWriter as W;
        Some(match *ty {
            Type::BOOL => W::Bool,
            Type::INT2 => W::Int2,
            Type::INT4 => W::Int4,
            Type::INT8 => W::Int8,
            Type::OID => W::Oid,
            Type::FLOAT4 => W::Float4,
            Type::FLOAT8 => W::Float8,
            Type::NUMERIC => W::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::XML | Type::UNKNOWN => {
                W::Text
            }
            Type::CHAR => W::Char,
            Type::BYTEA => W::Bytea,
            Type::JSON => W::Json,
            Type::JSONB => W::Jsonb,
            Type::UUID => W::Uuid,
            Type::DATE => W::Date,
            Type::TIME => W::Time,
            Type::TIMETZ => W::TimeTz,
            Type::TIMESTAMP => W::Timestamp,
            Type::TIMESTAMPTZ => W::TimestampTz,
            Type::INTERVAL => W::Interval,
            Type::INET | Type::CIDR => W::Inet,
            _ => match ty.kind() {
                Kind::Enum(_) => W::Text,
                Kind::Domain(base) => Self::for_type(base)?,
                Kind::Array(elem) => W::Array(Box::new(Self::for_type(elem)?)),
                _ => return None,
            },
        })
    }

    /// Writes `raw` (`None` = SQL NULL) as JSON. A value that does not
    /// decode (never for what PostgreSQL sends) is written as `null`.
    pub(crate) fn write(&self, raw: Option<&[u8]>, out: &mut Vec<u8>) {
        let Some(b) = raw else {
            out.extend_from_slice(b"null");
            return;
        };
        if self.write_value(b, out).is_none() {
            out.extend_from_slice(b"null");
        }
    }

    fn write_value(&self, b: &[u8], out: &mut Vec<u8>) -> Option<()> {
        use ValueWriter as W;
        let mut itoa = itoa::Buffer::new();
        match self {
            W::Bool => out.extend_from_slice(if *b.first()? != 0 { b"true" } else { b"false" }),
            W::Int2 => out.extend_from_slice(itoa.format(i16::from_be_bytes(arr(b)?)).as_bytes()),
            W::Int4 => out.extend_from_slice(itoa.format(i32::from_be_bytes(arr(b)?)).as_bytes()),
            W::Int8 => out.extend_from_slice(itoa.format(i64::from_be_bytes(arr(b)?)).as_bytes()),
            W::Oid => out.extend_from_slice(itoa.format(u32::from_be_bytes(arr(b)?)).as_bytes()),
            W::Float4 => write_f32(out, f32::from_be_bytes(arr(b)?)),
            W::Float8 => write_f64(out, f64::from_be_bytes(arr(b)?)),
            W::Numeric => write_numeric(b, out)?,
            W::Text => write_text(b, out),
            W::Char => write_text(&b[..b.len().min(1)], out),
            W::Bytea => {
                out.push(b'"');
                let start = out.len();
                out.resize(start + base64::encoded_len(b.len(), true)?, 0);
                let n = STANDARD.encode_slice(b, &mut out[start..]).ok()?;
                out.truncate(start + n);
                out.push(b'"');
            }
            W::Json => write_minified_json(b, out),
            W::Jsonb => {
                // Version 1 of the jsonb binary format is its text form.
                let (&v, text) = b.split_first()?;
                if v != 1 {
                    return None;
                }
                write_minified_json(text, out)
            }
            W::Uuid => {
                let u: [u8; 16] = arr(b)?;
                let mut s = [0u8; 38];
                let hex = b"0123456789abcdef";
                let mut j = 1;
                s[0] = b'"';
                for (i, byte) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        s[j] = b'-';
                        j += 1;
                    }
                    s[j] = hex[(byte >> 4) as usize];
                    s[j + 1] = hex[(byte & 15) as usize];
                    j += 2;
                }
                s[37] = b'"';
                out.extend_from_slice(&s);
            }
            W::Date => {
                let d = i32::from_be_bytes(arr(b)?);
                out.push(b'"');
                match d {
                    i32::MAX => out.extend_from_slice(b"infinity"),
                    i32::MIN => out.extend_from_slice(b"-infinity"),
                    _ => write_date(i64::from(d), out),
                }
                out.push(b'"');
            }
            W::Time => {
                out.push(b'"');
                write_time(i64::from_be_bytes(arr(b)?), out);
                out.push(b'"');
            }
            W::TimeTz => {
                if b.len() != 12 {
                    return None;
                }
                let us = i64::from_be_bytes(arr(&b[..8])?);
                // Seconds *west* of UTC.
                let west = i32::from_be_bytes(arr(&b[8..])?);
                out.push(b'"');
                write_time(us, out);
                write_offset(-i64::from(west), out);
                out.push(b'"');
            }
            W::Timestamp | W::TimestampTz => {
                let us = i64::from_be_bytes(arr(b)?);
                out.push(b'"');
                match us {
                    i64::MAX => out.extend_from_slice(b"infinity"),
                    i64::MIN => out.extend_from_slice(b"-infinity"),
                    _ => {
                        let days = us.div_euclid(86_400_000_000);
                        write_date(days, out);
                        out.push(b'T');
                        write_time(us.rem_euclid(86_400_000_000), out);
                        if *self == W::TimestampTz {
                            out.push(b'Z');
                        }
                    }
                }
                out.push(b'"');
            }
            W::Interval => {
                if b.len() != 16 {
                    return None;
                }
                let us = i64::from_be_bytes(arr(&b[..8])?);
                let days = i32::from_be_bytes(arr(&b[8..12])?);
                let months = i32::from_be_bytes(arr(&b[12..])?);
                out.push(b'"');
                write_interval(months, days, us, out);
                out.push(b'"');
            }
            W::Inet => write_inet(b, out)?,
            W::Array(elem) => write_array(elem, b, out)?,
        }
        Some(())
    }
}

fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

fn write_text(b: &[u8], out: &mut Vec<u8>) {
    // The SQLite writer's: SIMD validation, lossy on invalid UTF-8.
    crate::server::sql::write_text(out, b)
}

/// Copies valid JSON text without the whitespace between its tokens (a row
/// line is one line, and `json` keeps its input's newlines).
fn write_minified_json(b: &[u8], out: &mut Vec<u8>) {
    out.reserve(b.len());
    let mut in_str = false;
    let mut escaped = false;
    for &c in b {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_str = true;
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
}

/// `numeric`'s binary form: digit count, weight (of the first base-10000
/// digit), sign, display scale, then base-10000 digits.
fn write_numeric(b: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if b.len() < 8 {
        return None;
    }
    let ndigits = u16::from_be_bytes([b[0], b[1]]) as usize;
    let weight = i16::from_be_bytes([b[2], b[3]]) as i32;
    let sign = u16::from_be_bytes([b[4], b[5]]);
    let dscale = u16::from_be_bytes([b[6], b[7]]) as i32;
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0x0000 | 0x4000 => {}
        // NaN, +Infinity, -Infinity
        _ => {
            out.extend_from_slice(b"null");
            return Some(());
        }
    }
    let digit = |i: i32| -> u16 {
        if i < 0 || i as usize >= ndigits {
            0
        } else {
            let k = 8 + 2 * i as usize;
            u16::from_be_bytes([b[k], b[k + 1]])
        }
    };
    if sign == 0x4000 && ndigits > 0 {
        out.push(b'-');
    }
    // Integer part: digits 0..=weight.
    if weight < 0 {
        out.push(b'0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            if i == 0 {
                out.extend_from_slice(itoa::Buffer::new().format(d).as_bytes());
            } else {
                out.extend_from_slice(format!("{d:04}").as_bytes());
            }
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let mut written = 0;
        let mut i = weight + 1;
        while written < dscale {
            let d = format!("{:04}", digit(i));
            for &c in d.as_bytes() {
                if written < dscale {
                    out.push(c);
                    written += 1;
                }
            }
            i += 1;
        }
    }
    Some(())
}

/// Days since 2000-01-01 as `YYYY-MM-DD` (proleptic Gregorian, ISO 8601
/// expanded years outside 0..=9999).
fn write_date(days_since_2000: i64, out: &mut Vec<u8>) {
    // Howard Hinnant's civil_from_days, from 1970-01-01.
    let z = days_since_2000 + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if (0..=9999).contains(&y) {
        out.extend_from_slice(format!("{y:04}-{m:02}-{d:02}").as_bytes());
    } else if y > 9999 {
        out.extend_from_slice(format!("+{y}-{m:02}-{d:02}").as_bytes());
    } else {
        out.extend_from_slice(format!("-{:04}-{m:02}-{d:02}", -y).as_bytes());
    }
}

/// Microseconds since midnight as `HH:MM:SS[.ffffff]` (trailing zeros of
/// the fraction dropped, as PostgreSQL prints them).
fn write_time(us: i64, out: &mut Vec<u8>) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    out.extend_from_slice(format!("{h:02}:{m:02}:{s:02}").as_bytes());
    write_fraction(frac, out);
}

fn write_fraction(frac_us: i64, out: &mut Vec<u8>) {
    if frac_us != 0 {
        let f = format!(".{frac_us:06}");
        out.extend_from_slice(f.trim_end_matches('0').as_bytes());
    }
}

/// A UTC offset in seconds east as `+hh:mm` (`+hh:mm:ss` when needed).
fn write_offset(east: i64, out: &mut Vec<u8>) {
    let sign = if east < 0 { '-' } else { '+' };
    let a = east.abs();
    out.extend_from_slice(format!("{sign}{:02}:{:02}", a / 3600, a / 60 % 60).as_bytes());
    if a % 60 != 0 {
        out.extend_from_slice(format!(":{:02}", a % 60).as_bytes());
    }
}

/// An interval as ISO 8601 duration, exactly as PostgreSQL's
/// `IntervalStyle = iso_8601` prints it (each field keeps its own sign).
fn write_interval(months: i32, days: i32, us: i64, out: &mut Vec<u8>) {
    if months == 0 && days == 0 && us == 0 {
        out.extend_from_slice(b"PT0S");
        return;
    }
    let (years, mons) = (months / 12, months % 12);
    out.push(b'P');
    for (n, unit) in [(years, 'Y'), (mons, 'M'), (days, 'D')] {
        if n != 0 {
            out.extend_from_slice(format!("{n}{unit}").as_bytes());
        }
    }
    if us != 0 {
        out.push(b'T');
        let hours = us / 3_600_000_000;
        let mins = us / 60_000_000 % 60;
        let secs_us = us % 60_000_000;
        if hours != 0 {
            out.extend_from_slice(format!("{hours}H").as_bytes());
        }
        if mins != 0 {
            out.extend_from_slice(format!("{mins}M").as_bytes());
        }
        if secs_us != 0 {
            if secs_us < 0 {
                out.push(b'-');
            }
            let a = secs_us.abs();
            out.extend_from_slice(itoa::Buffer::new().format(a / 1_000_000).as_bytes());
            write_fraction(a % 1_000_000, out);
            out.push(b'S');
        }
    }
}

/// `inet`/`cidr`: family, mask bits, is-cidr flag, address length, address.
fn write_inet(b: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let (&family, rest) = b.split_first()?;
    let (&bits, rest) = rest.split_first()?;
    let (&is_cidr, rest) = rest.split_first()?;
    let (&len, addr) = rest.split_first()?;
    if addr.len() != len as usize {
        return None;
    }
    let (text, full) = match family {
        2 => (std::net::Ipv4Addr::from(arr::<4>(addr)?).to_string(), 32),
        3 => (std::net::Ipv6Addr::from(arr::<16>(addr)?).to_string(), 128),
        _ => return None,
    };
    let s = if is_cidr != 0 || bits != full {
        format!("{text}/{bits}")
    } else {
        text
    };
    write_json_str(out, s.as_bytes());
    Some(())
}

/// An array: dimensions, null flag, element type, (length, lower bound) per
/// dimension, then each element as (length or -1, bytes).
fn write_array(elem: &ValueWriter, b: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let ndim = i32::from_be_bytes(arr(b.get(..4)?)?) as usize;
    if ndim == 0 {
        out.extend_from_slice(b"[]");
        return Some(());
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut at = 12;
    for _ in 0..ndim {
        let len = i32::from_be_bytes(arr(b.get(at..at + 4)?)?);
        dims.push(usize::try_from(len).ok()?);
        at += 8;
    }
    let mut pos = at;
    write_dim(elem, b, &dims, &mut pos, out)?;
    Some(())
}

fn write_dim(
    elem: &ValueWriter,
    b: &[u8],
    dims: &[usize],
    pos: &mut usize,
    out: &mut Vec<u8>,
) -> Option<()> {
    out.push(b'[');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(b',');
        }
        if dims.len() > 1 {
            write_dim(elem, b, &dims[1..], pos, out)?;
        } else {
            let len = i32::from_be_bytes(arr(b.get(*pos..*pos + 4)?)?);
            *pos += 4;
            if len < 0 {
                out.extend_from_slice(b"null");
            } else {
                let v = b.get(*pos..*pos + len as usize)?;
                *pos += len as usize;
                elem.write(Some(v), out);
            }
        }
    }
    out.push(b']');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(writer: ValueWriter, b: &[u8]) -> String {
        let mut out = Vec::new();
        writer.write(Some(b), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_are_exact_decimal_literals() {
        use ValueWriter::Numeric as N;
        assert_eq!(w(N, &numeric(0, 0, 0, &[])), "0");
        assert_eq!(w(N, &numeric(1, 0, 0, &[12, 3456])), "123456");
        assert_eq!(w(N, &numeric(0, 0x4000, 2, &[1, 2300])), "-1.23");
        assert_eq!(w(N, &numeric(-1, 0, 5, &[12])), "0.00120");
        assert_eq!(w(N, &numeric(2, 0, 0, &[1])), "100000000");
        assert_eq!(w(N, &numeric(0, 0xC000, 0, &[])), "null");
        assert_eq!(w(N, &numeric(0, 0xD000, 0, &[])), "null");
    }

    #[test]
    fn dates_and_times_are_iso_8601() {
        assert_eq!(w(ValueWriter::Date, &0i32.to_be_bytes()), "\"2000-01-01\"");
        assert_eq!(
            w(ValueWriter::Date, &(-1i32).to_be_bytes()),
            "\"1999-12-31\""
        );
        assert_eq!(w(ValueWriter::Date, &59i32.to_be_bytes()), "\"2000-02-29\"");
        assert_eq!(
            w(ValueWriter::Date, &i32::MAX.to_be_bytes()),
            "\"infinity\""
        );
        let ts = (86_400_000_000i64 + 3_723_500_000).to_be_bytes();
        assert_eq!(w(ValueWriter::Timestamp, &ts), "\"2000-01-02T01:02:03.5\"");
        assert_eq!(
            w(ValueWriter::TimestampTz, &ts),
            "\"2000-01-02T01:02:03.5Z\""
        );
        assert_eq!(
            w(ValueWriter::Timestamp, &(-1i64).to_be_bytes()),
            "\"1999-12-31T23:59:59.999999\""
        );
        let mut tz = 45_000_000_000i64.to_be_bytes().to_vec();
        tz.extend_from_slice(&(-7200i32).to_be_bytes());
        assert_eq!(w(ValueWriter::TimeTz, &tz), "\"12:30:00+02:00\"");
    }

    #[test]
    fn intervals_are_iso_8601_durations() {
        let iv = |us: i64, days: i32, months: i32| {
            let mut b = us.to_be_bytes().to_vec();
            b.extend_from_slice(&days.to_be_bytes());
            b.extend_from_slice(&months.to_be_bytes());
            w(ValueWriter::Interval, &b)
        };
        assert_eq!(iv(0, 0, 0), "\"PT0S\"");
        assert_eq!(iv(7_200_000_000, 1, 0), "\"P1DT2H\"");
        assert_eq!(iv(6_500_000, 3, 14), "\"P1Y2M3DT6.5S\"");
        assert_eq!(iv(-90_000_000, 0, 0), "\"PT-1M-30S\"");
    }

    #[test]
    fn json_uuid_bytea_inet_and_arrays() {
        assert_eq!(
            w(
                ValueWriter::Json,
                b"{ \"a\" :\n [1, 2], \"b c\": \"x \\\" y\" }"
            ),
            "{\"a\":[1,2],\"b c\":\"x \\\" y\"}"
        );
        assert_eq!(w(ValueWriter::Jsonb, b"\x01{\"a\": 1}"), "{\"a\":1}");
        assert_eq!(
            w(
                ValueWriter::Uuid,
                &[
                    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd,
                    0x38, 0x0a, 0x11
                ]
            ),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""
        );
        assert_eq!(w(ValueWriter::Bytea, &[0, 1, 255]), "\"AAH/\"");
        assert_eq!(
            w(ValueWriter::Inet, &[2, 32, 0, 4, 10, 0, 0, 1]),
            "\"10.0.0.1\""
        );
        assert_eq!(
            w(ValueWriter::Inet, &[2, 24, 1, 4, 10, 0, 0, 0]),
            "\"10.0.0.0/24\""
        );
        // int4[] {{1,NULL},{3,4}}
        let mut a = Vec::new();
        for v in [2i32, 1, 23, 2, 1, 2, 1] {
            a.extend_from_slice(&v.to_be_bytes());
        }
        for v in [Some(1i32), None, Some(3), Some(4)] {
            match v {
                Some(v) => {
                    a.extend_from_slice(&4i32.to_be_bytes());
                    a.extend_from_slice(&v.to_be_bytes());
                }
                None => a.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        assert_eq!(
            w(ValueWriter::Array(Box::new(ValueWriter::Int4)), &a),
            "[[1,null],[3,4]]"
        );
    }
}
