//! Small helpers for crossing the boundary: coded errors, option bags,
//! numbers and byte arrays taken from untrusted JS values.

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

/// Code of errors caused by a wrongly typed or out-of-range argument.
pub(crate) const INVALID_ARGUMENT: &str = "invalid_argument";

/// A JS `Error` with `message` and a `code` property.
pub(crate) fn coded_error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    set(&e, "code", code);
    e.into()
}

/// An [`INVALID_ARGUMENT`] error.
pub(crate) fn invalid_argument(message: &str) -> JsValue {
    coded_error(INVALID_ARGUMENT, message)
}

/// Sets `key` on `target`. Only used on objects this module created, where
/// a plain data property cannot be refused.
pub(crate) fn set(target: &JsValue, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(target, &JsValue::from_str(key), &value.into());
}

/// A fresh plain object.
pub(crate) fn object() -> JsValue {
    Object::new().into()
}

/// `u64` as a JS number (exact up to 2^53, which every count here stays under).
pub(crate) fn num(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

/// Reads `key` from an option bag; `undefined` and `null` are absent. A
/// throwing getter becomes the error it threw.
pub(crate) fn get_opt(options: &JsValue, key: &str) -> Result<Option<JsValue>, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() {
        return Err(invalid_argument("options must be an object"));
    }
    let v = Reflect::get(options, &JsValue::from_str(key))?;
    Ok(if v.is_undefined() || v.is_null() {
        None
    } else {
        Some(v)
    })
}

/// A non-negative safe integer (`0 ..= 2^53 - 1`).
pub(crate) fn to_u64(v: &JsValue, name: &str) -> Result<u64, JsValue> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    match v.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= MAX_SAFE => Ok(f as u64),
        _ => Err(invalid_argument(&format!(
            "{name} must be a non-negative integer"
        ))),
    }
}

/// An optional non-negative integer option.
pub(crate) fn opt_u64(options: &JsValue, key: &str) -> Result<Option<u64>, JsValue> {
    get_opt(options, key)?.map(|v| to_u64(&v, key)).transpose()
}

/// A required string.
pub(crate) fn to_string(v: &JsValue, name: &str) -> Result<String, JsValue> {
    v.as_string()
        .ok_or_else(|| invalid_argument(&format!("{name} must be a string")))
}

/// A required string option.
pub(crate) fn req_string(options: &JsValue, key: &str) -> Result<String, JsValue> {
    match get_opt(options, key)? {
        Some(v) => to_string(&v, key),
        None => Err(invalid_argument(&format!("{key} is required"))),
    }
}

/// Copies a `Uint8Array` (or `ArrayBuffer`) into `buf`, replacing its contents.
pub(crate) fn copy_bytes(v: &JsValue, name: &str, buf: &mut Vec<u8>) -> Result<(), JsValue> {
    let arr = if let Some(a) = v.dyn_ref::<Uint8Array>() {
        a.clone()
    } else if v.is_instance_of::<js_sys::ArrayBuffer>() {
        Uint8Array::new(v)
    } else {
        return Err(invalid_argument(&format!(
            "{name} must be a Uint8Array or an ArrayBuffer"
        )));
    };
    buf.clear();
    buf.resize(arr.length() as usize, 0);
    arr.copy_to(buf);
    Ok(())
}

/// A `string` (taken as UTF-8) or a `Uint8Array` (taken as is).
pub(crate) fn text_or_bytes(v: &JsValue, name: &str, buf: &mut Vec<u8>) -> Result<(), JsValue> {
    if let Some(s) = v.as_string() {
        buf.clear();
        buf.extend_from_slice(s.as_bytes());
        Ok(())
    } else if v.is_instance_of::<Uint8Array>() {
        copy_bytes(v, name, buf)
    } else {
        Err(invalid_argument(&format!(
            "{name} must be a string or a Uint8Array"
        )))
    }
}

/// Strings to a JS array.
pub(crate) fn string_array<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Array {
    let out = Array::new();
    for s in items {
        out.push(&JsValue::from_str(s.as_ref()));
    }
    out
}

/// Byte chunks to a JS array of `Uint8Array`s.
pub(crate) fn chunk_array(chunks: &[Vec<u8>]) -> Array {
    let out = Array::new_with_length(chunks.len() as u32);
    for (i, c) in chunks.iter().enumerate() {
        out.set(i as u32, Uint8Array::from(c.as_slice()).into());
    }
    out
}
