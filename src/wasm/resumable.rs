//! `assessResumability`: the classifier of PROTOCOL.md §2.5.

use std::cell::RefCell;

use js_sys::Function;
use wasm_bindgen::prelude::*;

use super::js::{coded_error, get_opt, invalid_argument, object, set};
use crate::core::resumable::assess_resumability_with;

/// Whether `sql` is resumable: `{resumable, reason, table, hasLimit}`.
/// `options.integerPrimaryKey(table)` may name the table's `INTEGER PRIMARY
/// KEY` column so `ORDER BY` that column counts as rowid order; a callback
/// that throws (or returns a non-string) makes this throw `callback_failed`.
#[wasm_bindgen(js_name = assessResumability, unchecked_return_type = "Resumability")]
pub fn assess_resumability_js(
    sql: &str,
    options: Option<super::types::AssessOptionsArg>,
) -> Result<JsValue, JsValue> {
    let options = super::types::bag(options);
    let callback = match get_opt(&options, "integerPrimaryKey")? {
        Some(f) => Some(
            f.dyn_into::<Function>()
                .map_err(|_| invalid_argument("integerPrimaryKey must be a function"))?,
        ),
        None => None,
    };
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
                set(&e, "cause", thrown);
                *failure.borrow_mut() = Some(e);
                None
            }
        }
    };
    let r = assess_resumability_with(sql, &lookup);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let o = object();
    set(&o, "resumable", r.resumable);
    set(
        &o,
        "reason",
        r.reason
            .map_or(JsValue::NULL, |x| JsValue::from_str(x.as_str())),
    );
    set(&o, "table", r.table.map_or(JsValue::NULL, JsValue::from));
    set(&o, "hasLimit", r.has_limit);
    Ok(o)
}
