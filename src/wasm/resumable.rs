//! `assessResumability`: the classifier of PROTOCOL.md §2.5.

use std::cell::RefCell;

use js_sys::Function;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::js::{coded_error, to_js, with_details};
use crate::core::resumable::assess_resumability_with;

/// `AssessOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AssessOptions {
    #[serde(default, deserialize_with = "super::js::opt_function")]
    integer_primary_key: Option<Function>,
}

/// `Resumability` (`null` for an absent reason or table).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Verdict<'a> {
    resumable: bool,
    reason: Option<&'a str>,
    table: Option<&'a str>,
    has_limit: bool,
}

#[derive(Serialize)]
struct Cause {
    #[serde(with = "serde_wasm_bindgen::preserve")]
    cause: JsValue,
}

/// Whether `sql` is resumable: `{resumable, reason, table, hasLimit}`.
/// `options.integerPrimaryKey(table)` may name the table's `INTEGER PRIMARY
/// KEY` column so `ORDER BY` that column counts as rowid order; a callback
/// that throws (or returns a non-string) makes this throw `callback_failed`.
#[wasm_bindgen(js_name = assessResumability, unchecked_return_type = "Resumability")]
pub fn assess_resumability_js(
    sql: &str,
    options: Option<super::types::AssessOptionsArg>,
) -> Result<JsValue, JsValue> {
    let options: AssessOptions = super::js::options(options)?;
    let callback = options.integer_primary_key;
    let failure: RefCell<Option<JsValue>> = RefCell::new(None);
    let lookup = |table: &str| -> Option<String> {
        let f = callback.as_ref()?;
        if failure.borrow().is_some() {
            return None;
        }
        match f.call1(&JsValue::UNDEFINED, &JsValue::from_str(table)) {
            Ok(v) if v.is_undefined() || v.is_null() => None,
            Ok(v) => match v.as_string() {
                Some(s) => Some(s),
                None => {
                    *failure.borrow_mut() = Some(coded_error(
                        "callback_failed",
                        "integerPrimaryKey must return a string, null or undefined",
                    ));
                    None
                }
            },
            Err(thrown) => {
                let e = coded_error("callback_failed", "the integerPrimaryKey callback threw");
                *failure.borrow_mut() = Some(with_details(e, &Cause { cause: thrown }));
                None
            }
        }
    };
    let r = assess_resumability_with(sql, &lookup);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    to_js(&Verdict {
        resumable: r.resumable,
        reason: r.reason.map(|x| x.as_str()),
        table: r.table.as_deref(),
        has_limit: r.has_limit,
    })
}
