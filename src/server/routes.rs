//! HTTP routes, request parsing, refusals and CORS.

use std::path::{Component, Path};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::backend::{Params, Shape};
use super::pipe::{Pipe, PipeBody, StreamCtl};
use super::respond::{authenticate, refusal_response, refuse};
use super::stream::{resolve_cursor, run_fresh, run_resume, FreshRequest, ResumeRequest};
use super::{AppState, Caller, MAX_REQUEST_BODY};
use crate::core::audit::AuditEvent;
use crate::core::cursor::CursorError;
use crate::core::digest::is_hex_of_len;
use crate::core::http::STREAM_HEADERS;
use crate::core::protocol::{CountMode, ErrorCode};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/query/stream",
            post(stream_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/query/stream/cancel",
            post(cancel_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/ingest/stream",
            post(super::ingest::ingest_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/debug/stats",
            get(stats_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route("/healthz", get(super::ops::healthz))
        .route("/readyz", get(super::ops::readyz))
        .route("/metrics", get(super::ops::metrics))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::ops::observe_requests,
        ))
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

async fn cors(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Retry-After"),
    );
    h.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    res
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    refuse(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}

async fn read_json(
    body: Body,
    headers: &HeaderMap,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, Response> {
    let too_large = || {
        refuse(
            ErrorCode::PayloadTooLarge,
            format!("request bodies are limited to {MAX_REQUEST_BODY} bytes"),
        )
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_REQUEST_BODY as u64)
    {
        return Err(too_large());
    }
    // Slowloris: the whole body must arrive within the timeout (no slot is
    // held while it does not).
    let read = axum::body::to_bytes(body, MAX_REQUEST_BODY);
    let Ok(read) = tokio::time::timeout(timeout, read).await else {
        return Err(refuse(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        ));
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
            let is_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return Err(if is_limit {
                too_large()
            } else {
                refuse(ErrorCode::BadRequest, "the request body could not be read")
            });
        }
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| refuse(ErrorCode::BadRequest, format!("the body is not JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FreshBody {
    query: String,
    #[serde(default)]
    params: Option<Params>,
    #[serde(default)]
    shape: Option<Shape>,
    /// (1.1) `"none"`, `"estimated"` or `"exact"`.
    #[serde(default)]
    count: Option<CountMode>,
    /// (1.1) A positive integer: progress lines at most this often.
    #[serde(default)]
    progress_ms: Option<std::num::NonZeroU64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeBody {
    cursor: String,
    after_rows: u64,
    prefix_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelBody {
    cursor: String,
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    refuse(ErrorCode::BadRequest, format!("invalid request body: {e}"))
}

fn stream_response(pipe: Arc<Pipe>, ctl: Arc<StreamCtl>) -> Response {
    let coding = pipe.coding();
    let mut res = Response::new(Body::new(PipeBody::new(pipe, ctl)));
    let h = res.headers_mut();
    for (k, v) in STREAM_HEADERS {
        h.insert(k, HeaderValue::from_static(v));
    }
    // Also on identity responses: caches must not reuse one coding's body
    // for a request that accepts another.
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(c) = coding {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(c.token()),
        );
    }
    res
}

fn cursor_refusal(state: &AppState, caller: &Caller, e: CursorError) -> Response {
    state.record(AuditEvent::CursorRejected {
        at_ms: state.now_ms(),
        code: e.code().to_owned(),
        principal: caller.scope.principal.clone(),
        tenant: caller.scope.tenant.clone(),
    });
    let code = ErrorCode::parse(e.code()).unwrap_or(ErrorCode::CursorNotFound);
    refuse(code, e.to_string())
}

/// Authenticates the caller, then reads the body as one JSON object (serde
/// would also read a struct from a JSON array, e.g. `["<cursor>"]`).
async fn authenticated_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Caller, serde_json::Value), Response> {
    let caller = authenticate(state, headers).map_err(|r| *r)?;
    let value = read_json(body, headers, state.limits.body_timeout()).await?;
    if !value.is_object() {
        return Err(bad_request("expected a JSON object"));
    }
    Ok((caller, value))
}

async fn stream_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (caller, value) = match authenticated_object(&state, &headers, body).await {
        Ok(cv) => cv,
        Err(r) => return r,
    };
    if state.shutting_down.load(Ordering::SeqCst) {
        return refuse(ErrorCode::ShuttingDown, "the server is shutting down");
    }
    let Some(backend) = state.tenants.get(&caller.scope.tenant).map(|t| t.reader()) else {
        return refuse(ErrorCode::Unauthorized, "unknown tenant");
    };
    let pipe = Pipe::new(state.clock.clone());
    if let Some(coding) = state.compression.negotiate(&headers) {
        pipe.compress_with(state.compression.compressor(coding));
    }
    let ctl = StreamCtl::new(&pipe);
    let (tx, rx) = tokio::sync::oneshot::channel();
    if value.get("cursor").is_some() {
        let req: ResumeBody = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => return bad_request(e),
        };
        if !is_hex_of_len(&req.prefix_hash, 64) {
            return bad_request("prefix_hash must be 64 hex characters");
        }
        let resolved = if state.cluster.is_some() {
            let (st, token, scope) = (state.clone(), req.cursor.clone(), caller.scope.clone());
            tokio::task::spawn_blocking(move || resolve_cursor(&st, &token, &scope))
                .await
                .unwrap_or(Err(CursorError::NotFound))
        } else {
            resolve_cursor(&state, &req.cursor, &caller.scope)
        };
        let handle = match resolved {
            Ok(h) => h,
            Err(e) => return cursor_refusal(&state, &caller, e),
        };
        let (st, p, c) = (state.clone(), pipe.clone(), ctl.clone());
        let r = ResumeRequest {
            after_rows: req.after_rows,
            prefix_hash: req.prefix_hash,
        };
        tokio::task::spawn_blocking(move || run_resume(st, caller, handle, r, p, c, tx));
    } else {
        let req: FreshBody = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => return bad_request(e),
        };
        let (st, p, c) = (state.clone(), pipe.clone(), ctl.clone());
        let r = FreshRequest {
            query: req.query,
            params: req.params,
            shape: req.shape.unwrap_or_default(),
            count: req.count.unwrap_or_default(),
            progress_ms: req.progress_ms.map(|n| n.get()),
        };
        tokio::task::spawn_blocking(move || run_fresh(st, caller, backend, r, p, c, tx));
    }
    // If this future is dropped (the client left before the stream started),
    // the guard raises the stream's token so the producer stops.
    let guard = DisconnectGuard(Some(ctl.clone()));
    let result = rx.await;
    drop(guard.disarm());
    match result {
        Ok(Ok(())) => stream_response(pipe, ctl),
        Ok(Err(r)) => refusal_response(r),
        Err(_) => refuse(ErrorCode::InternalError, "the stream failed to start"),
    }
}

struct DisconnectGuard(Option<Arc<StreamCtl>>);

impl DisconnectGuard {
    fn disarm(mut self) -> Option<Arc<StreamCtl>> {
        self.0.take()
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.stop(super::pipe::StopCause::Disconnect);
        }
    }
}

async fn cancel_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (caller, value) = match authenticated_object(&state, &headers, body).await {
        Ok(cv) => cv,
        Err(r) => return r,
    };
    let req: CancelBody = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let local = state
        .cursors
        .cancel(&req.cursor, &caller.scope, state.now_ms());
    // Every instance must see the tombstone (the one running the stream
    // stops it).
    let shared = if state.cluster.is_some() {
        let (st, token, scope) = (state.clone(), req.cursor.clone(), caller.scope.clone());
        tokio::task::spawn_blocking(move || st.shared.cancel_cursor(&token, &scope, st.now_ms()))
            .await
            .unwrap_or(Ok(false))
    } else {
        Ok(false)
    };
    let outcome = match (local, shared) {
        (Ok(()), _) | (_, Ok(true)) => Ok(()),
        (Err(e), _) => Err(e),
    };
    match outcome {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"cancelled\":true}",
        )
            .into_response(),
        Err(e) => cursor_refusal(&state, &caller, e),
    }
}

async fn stats_handler(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authenticate(&state, &headers) {
        return *r;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&state.stats()).unwrap_or_default(),
    )
        .into_response()
}

async fn fallback(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if req.method() == Method::OPTIONS {
        return preflight().await;
    }
    if let Some(dir) = &state.static_dir {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            if let Some(res) = serve_static(dir, req.uri().path()).await {
                return res;
            }
        }
    }
    refuse(
        ErrorCode::NotFound,
        format!("no route for {}", req.uri().path()),
    )
}

/// Decodes `%XX` escapes of a URL path; `None` for malformed escapes, NUL
/// bytes or invalid UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

async fn serve_static(dir: &Path, url_path: &str) -> Option<Response> {
    let decoded = percent_decode(url_path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut path = dir.join(rel);
    if path.is_dir() {
        path = path.join("index.html");
    }
    let bytes = tokio::fs::read(&path).await.ok()?;
    let ctype = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    Some(
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
    )
}
