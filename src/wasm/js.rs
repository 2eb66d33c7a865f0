//! Crossing the boundary: option bags in and values out through
//! `serde-wasm-bindgen`, coded errors, and byte arrays taken from untrusted
//! JS values.
//!
//! Option bags are `#[derive(Deserialize)]` structs read by [`options`] /
//! [`from_js`]: an unknown key or a wrongly typed value is an
//! `invalid_argument` error whose message names the key. Values handed to JS
//! are `Serialize` structs written by [`to_js`] (plain objects, `null` for an
//! absent optional); a `u64` the bindings hand out is a `number` up to
//! 2^53 - 1 and is either written as a `bigint` beyond ([`exact_u64`], for
//! values that came from outside) or refused, never rounded.

use js_sys::{Array, Object, Uint8Array};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use wasm_bindgen::{JsCast, JsValue};

/// Code of errors caused by a wrongly typed or out-of-range argument.
pub(crate) const INVALID_ARGUMENT: &str = "invalid_argument";

/// Largest integer a JS number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The writer of every value handed to JS: structs and maps as plain
/// objects, `None` as `null`.
const SERIALIZER: serde_wasm_bindgen::Serializer =
    serde_wasm_bindgen::Serializer::json_compatible();

/// A JS `Error` with `message` and a `code` property.
pub(crate) fn coded_error(code: &str, message: &str) -> JsValue {
    #[derive(Serialize)]
    struct Code<'a> {
        code: &'a str,
    }
    with_details(js_sys::Error::new(message).into(), &Code { code })
}

/// Copies the fields of `details` (a struct) onto the error `err`.
pub(crate) fn with_details(err: JsValue, details: &impl Serialize) -> JsValue {
    // Our own detail structs hold strings, small numbers and preserved JS
    // values: they always serialise.
    if let Ok(props) = details.serialize(&SERIALIZER) {
        Object::assign(
            err.unchecked_ref::<Object>(),
            props.unchecked_ref::<Object>(),
        );
    }
    err
}

/// An [`INVALID_ARGUMENT`] error.
pub(crate) fn invalid_argument(message: &str) -> JsValue {
    coded_error(INVALID_ARGUMENT, message)
}

/// `value` as a JS value. Fails (`internal_error`) only for a local counter
/// past 2^53, which the default `u64` writer refuses rather than rounds.
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&SERIALIZER)
        .map_err(|e| coded_error("internal_error", &e.to_string()))
}

/// `serialize_with` for a `u64` from outside: a `number` when it is a safe
/// integer, else an exact `bigint`.
pub(crate) fn exact_u64<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    if *v <= MAX_SAFE_INTEGER {
        s.serialize_u64(*v)
    } else {
        // serde-wasm-bindgen writes 128-bit integers as BigInt.
        s.serialize_u128(u128::from(*v))
    }
}

/// A JSON value (a control line's object) written with unsafe integers as
/// `bigint`s and objects as plain objects.
pub(crate) struct ExactJson<'a>(pub(crate) &'a serde_json::Value);

impl Serialize for ExactJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value;
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    exact_u64(&u, s)
                } else if let Some(i) = n.as_i64() {
                    if i.unsigned_abs() <= MAX_SAFE_INTEGER {
                        s.serialize_i64(i)
                    } else {
                        s.serialize_i128(i128::from(i))
                    }
                } else {
                    s.serialize_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(t) => s.serialize_str(t),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&ExactJson(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &ExactJson(v))?;
                }
                map.end()
            }
        }
    }
}

/// Reads an optional option bag: `undefined` and `null` give the defaults.
/// See [`from_js`].
pub(crate) fn options<T: DeserializeOwned + Default>(
    value: Option<impl Into<JsValue>>,
) -> Result<T, JsValue> {
    match value.map(Into::into) {
        None => Ok(T::default()),
        Some(v) if v.is_undefined() || v.is_null() => Ok(T::default()),
        Some(v) => from_js(v, "options", true),
    }
}

/// Reads the object `value` (called `what` in errors) into `T`. With
/// `deny_unknown`, an own key `T` does not know is refused (serde-wasm-bindgen
/// only reads the keys it is asked for, so this is checked here). Every
/// error is `invalid_argument` and names the offending key.
pub(crate) fn from_js<T: DeserializeOwned>(
    value: JsValue,
    what: &str,
    deny_unknown: bool,
) -> Result<T, JsValue> {
    if !value.is_object() || value.is_function() {
        return Err(invalid_argument(&format!("{what} must be an object")));
    }
    if deny_unknown {
        let known = field_names::<T>();
        for key in Object::keys(value.unchecked_ref::<Object>()).iter() {
            let key = key.as_string().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                return Err(invalid_argument(&format!(
                    "{what}: unknown key `{key}` (expected one of: {})",
                    known.join(", ")
                )));
            }
        }
    }
    let de = serde_wasm_bindgen::Deserializer::from(value);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let name = if path == "." { what } else { path.as_str() };
        invalid_argument(&format!("{name}: {}", serde_message(e.into_inner())))
    })
}

/// A scalar argument (`nowMs`) read like an option: a safe non-negative
/// integer or a `bigint`.
pub(crate) fn u64_arg(value: JsValue, name: &str) -> Result<u64, JsValue> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| invalid_argument(&format!("{name}: {}", serde_message(e))))
}

/// The message of a serde-wasm-bindgen error (a JS `Error` inside), with
/// serde's Rust type name put in JS terms.
fn serde_message(e: serde_wasm_bindgen::Error) -> String {
    let v = JsValue::from(e);
    let message = match v.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => format!("{v:?}"),
    };
    message.replace(
        "expected u64",
        "expected a non-negative integer (a safe integer number or a bigint)",
    )
}

/// The field names of the struct `T` deserialises, asked of its derived
/// `Deserialize` by a deserializer that only records them.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// `deserialize_with` for an optional callback: a JS function, or absent.
pub(crate) fn opt_function<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<js_sys::Function>, D::Error> {
    #[derive(Deserialize)]
    struct Js(#[serde(with = "serde_wasm_bindgen::preserve")] JsValue);
    match Option::<Js>::deserialize(de)? {
        None => Ok(None),
        Some(Js(v)) => v
            .dyn_into::<js_sys::Function>()
            .map(Some)
            .map_err(|_| de::Error::custom("expected a function")),
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
