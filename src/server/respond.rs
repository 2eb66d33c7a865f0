//! Answers every HTTP handler of the server shares: a refusal as the JSON
//! body of its code, and the bearer-token check. Both the query routes and the
//! upload route build on this module; it depends on neither.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::stream::Refusal;
use super::{AppState, Caller};
use crate::core::protocol::ErrorCode;

/// A JSON refusal with the status of its code.
pub(crate) fn refusal_response(r: Refusal) -> Response {
    let status =
        StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        r.body.to_json(),
    )
        .into_response();
    if r.retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res.extensions_mut().insert(super::ops::RefusalCode(r.code));
    res
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    refusal_response(Refusal::new(code, message))
}

pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .auth
        .authenticate(header, state.now_ms(), |t| state.tenants.contains_key(t))
        .map_err(|e| {
            let mut res = refuse(ErrorCode::Unauthorized, e.0);
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Box::new(res)
        })
}
