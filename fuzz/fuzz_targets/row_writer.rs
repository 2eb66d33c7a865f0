//! The SQLite row writer against serde_json: any column names, any values
//! (TEXT as arbitrary bytes, invalid UTF-8 included), both shapes. The row
//! must be byte-identical to serde_json's output for the same values, with
//! invalid TEXT as serde_json writes `String::from_utf8_lossy` of it, and
//! BLOBs as serde_json writes their standard base64. REALs are the one
//! documented difference: the writer keeps `ryu`'s shortest form (`1e300`;
//! serde_json now writes `1e+300`, the digest of existing data depends on
//! the former), so a REAL must be `ryu`'s text, valid JSON to serde_json,
//! parse back to the same bits, and be `null` when not finite, as serde_json's is.
#![no_main]
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rowstream::server::fuzz_api::{write_sqlite_row, SqlValue};

fuzz_target!(|input: (bool, Vec<String>, Vec<(u8, Vec<u8>)>)| {
    let (object, names, raw) = input;
    let values: Vec<SqlValue<'_>> = raw
        .iter()
        .map(|(tag, bytes)| {
            let word = || {
                let mut w = [0u8; 8];
                let n = bytes.len().min(8);
                w[..n].copy_from_slice(&bytes[..n]);
                w
            };
            match tag % 8 {
                0 => SqlValue::Null,
                1 => SqlValue::Integer(i64::from_le_bytes(word())),
                2 => SqlValue::Real(f64::from_le_bytes(word())),
                3 => SqlValue::Blob(bytes),
                _ => SqlValue::Text(bytes),
            }
        })
        .collect();
    let got = write_sqlite_row(&names, &values, object);

    let json = |v: &SqlValue<'_>| match *v {
        SqlValue::Null => "null".to_owned(),
        SqlValue::Integer(i) => serde_json::to_string(&i).unwrap(),
        SqlValue::Real(f) if !f.is_finite() => {
            assert_eq!(serde_json::to_string(&f).unwrap(), "null");
            "null".to_owned()
        }
        SqlValue::Real(f) => {
            let text = ryu::Buffer::new().format_finite(f).to_owned();
            // Valid JSON, and the same number (std's parse is correctly
            // rounded; serde_json's default parse is not, in the last bit).
            assert!(serde_json::from_str::<serde_json::Number>(&text).is_ok());
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), f.to_bits(), "{text}");
            text
        }
        SqlValue::Text(t) => serde_json::to_string(&String::from_utf8_lossy(t)).unwrap(),
        SqlValue::Blob(b) => {
            serde_json::to_string(&base64::engine::general_purpose::STANDARD.encode(b)).unwrap()
        }
    };
    let n = names.len().min(values.len());
    let mut want = String::from(if object { "{" } else { "[" });
    for i in 0..n {
        if i > 0 {
            want.push(',');
        }
        if object {
            want.push_str(&serde_json::to_string(&names[i]).unwrap());
            want.push(':');
        }
        want.push_str(&json(&values[i]));
    }
    want.push(if object { '}' } else { ']' });
    assert_eq!(
        String::from_utf8(got).expect("the row is UTF-8"),
        want,
        "{names:?} {values:?}"
    );
});
