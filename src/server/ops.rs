//! Operating several instances: `GET /healthz` (the process serves),
//! `GET /readyz` (every tenant database and the cluster database answer)
//! and `GET /metrics` (Prometheus text format 0.0.4). None needs a token.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{lock, AppState, TenantDb};
use crate::core::audit::AuditEvent;
use crate::core::close::CloseReason;
use crate::core::protocol::{ErrorBody, ErrorCode};

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    streams: AtomicU64,
    resumes: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

/// Put on a refusal response: its code, counted by [`observe_requests`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefusalCode(pub(crate) ErrorCode);

impl Metrics {
    /// Counts what an audit event says (streams, resumes, rows and bytes
    /// sent at close).
    pub(crate) fn saw(&self, e: &AuditEvent) {
        match e {
            AuditEvent::StreamOpened { .. } => {
                self.streams.fetch_add(1, Ordering::Relaxed);
            }
            AuditEvent::StreamResumed { .. } => {
                self.streams.fetch_add(1, Ordering::Relaxed);
                self.resumes.fetch_add(1, Ordering::Relaxed);
            }
            AuditEvent::StreamClosed {
                lease: Some(_),
                row_count,
                bytes_written,
                ..
            } => {
                self.rows.fetch_add(*row_count, Ordering::Relaxed);
                self.bytes.fetch_add(*bytes_written, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Middleware: counts every refusal by its code, and logs every request
/// (target `rowstream::http`, level `info`; probes of `/healthz`, `/readyz`
/// and `/metrics` at `debug` unless they fail) once its response head is ready:
/// a stream's body goes on after that, and its end is logged by
/// [`log_lifecycle`].
pub(crate) async fn observe_requests(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let code = res.extensions().get::<RefusalCode>().map(|c| c.0);
    if let Some(code) = code {
        *lock(&state.metrics.refusals)
            .entry(code.as_str())
            .or_insert(0) += 1;
    }
    let status = res.status().as_u16();
    let code = code.map(|c| c.as_str());
    let head_ms = started.elapsed().as_millis() as u64;
    // Balancers and Prometheus poll these every few seconds: their lines
    // would bury the requests that matter.
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") && status < 500 {
        tracing::debug!(target: "rowstream::http", %method, path, status, code, head_ms, "request");
    } else {
        tracing::info!(target: "rowstream::http", %method, path, status, code, head_ms, "request");
    }
    res
}

/// Logs a stream's lifecycle (target `rowstream::stream`): opens and resumes
/// at `debug`, every end at `info` (a failure's at `warn`). The audit log
/// stays the record; this is for operators reading logs.
pub(crate) fn log_lifecycle(e: &AuditEvent) {
    match e {
        AuditEvent::StreamOpened {
            lease,
            tenant,
            principal,
            snapshot_lsn,
            ..
        } => {
            tracing::debug!(target: "rowstream::stream", lease, tenant, principal, snapshot_lsn, "opened")
        }
        AuditEvent::StreamResumed {
            lease,
            first_lease,
            after_rows,
            tenant,
            principal,
            ..
        } => {
            tracing::debug!(target: "rowstream::stream", lease, first_lease, after_rows, tenant, principal, "resumed")
        }
        AuditEvent::StreamClosed {
            lease,
            reason,
            cause,
            row_count,
            bytes_written,
            duration_ms,
            tenant,
            principal,
            ..
        } => {
            let lease = lease.as_deref().unwrap_or("-");
            let failed = matches!(
                reason,
                CloseReason::Error | CloseReason::SnapshotExpired | CloseReason::IntegrityFailed
            );
            let reason = reason.as_str();
            if !failed {
                tracing::info!(target: "rowstream::stream", lease, reason, cause, row_count, bytes_written, duration_ms, tenant, principal, "closed");
            } else {
                tracing::warn!(target: "rowstream::stream", lease, reason, cause, row_count, bytes_written, duration_ms, tenant, principal, "closed");
            }
        }
        AuditEvent::TokenExpiredDuringLease { lease, tenant, .. } => {
            tracing::debug!(target: "rowstream::stream", lease, tenant, "token expired during lease")
        }
        AuditEvent::CursorRejected {
            code,
            tenant,
            principal,
            ..
        } => {
            tracing::info!(target: "rowstream::stream", code, tenant, principal, "cursor rejected")
        }
    }
}

pub(crate) async fn healthz() -> Response {
    json(StatusCode::OK, "{\"status\":\"ok\"}".to_owned())
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Runs one blocking check with the timeout.
async fn check(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the check failed".into()),
        Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    }
}

pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut checks = Vec::new();
    for (name, db) in &state.tenants {
        let db = db.clone();
        let name = format!("tenant:{name}");
        checks.push(tokio::spawn(async move {
            let r = match db {
                TenantDb::Sqlite(t) => {
                    check(move || {
                        let rc = t.checkout().map_err(|e| e.to_string())?;
                        rc.conn
                            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                            .map_err(|e| e.to_string())
                    })
                    .await
                }
                TenantDb::Postgres(t) => {
                    match tokio::time::timeout(CHECK_TIMEOUT, t.ping()).await {
                        Ok(r) => r,
                        Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
                    }
                }
            };
            (name, r)
        }));
    }
    if state.cluster.is_some() {
        let st = state.clone();
        checks.push(tokio::spawn(async move {
            ("cluster".to_owned(), check(move || st.shared.check()).await)
        }));
    }
    let mut results = serde_json::Map::new();
    let mut ready = !state.shutting_down.load(Ordering::SeqCst);
    for c in checks {
        let (name, r) = c
            .await
            .unwrap_or_else(|_| ("check".into(), Err("the check failed".into())));
        ready &= r.is_ok();
        results.insert(
            name,
            match r {
                Ok(()) => "ok".into(),
                Err(e) => e.into(),
            },
        );
    }
    if ready {
        json(
            StatusCode::OK,
            serde_json::json!({"status": "ready", "checks": results}).to_string(),
        )
    } else {
        let body = ErrorBody::new(
            ErrorCode::NotReady,
            "a database this server needs does not answer",
        )
        .with("checks", serde_json::Value::Object(results));
        json(StatusCode::SERVICE_UNAVAILABLE, body.to_json())
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.stats();
    let m = &state.metrics;
    let label = format!(
        "instance=\"{}\"",
        stats.instance.replace(['"', '\\', '\n'], "_")
    );
    let mut out = String::new();
    let mut series = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{label}}} {value}"
        );
    };
    series(
        "rowstream_streams_running",
        "gauge",
        "Responses being streamed now.",
        stats.running_streams as u64,
    );
    series(
        "rowstream_capacity_slots_in_use",
        "gauge",
        "Capacity slots this instance holds.",
        u64::from(stats.slots_in_use),
    );
    series(
        "rowstream_snapshots_pinned",
        "gauge",
        "Snapshots held for cursors.",
        stats.pinned_snapshots as u64,
    );
    series(
        "rowstream_cursors_live",
        "gauge",
        "Live cursors in this process.",
        stats.cursors_live as u64,
    );
    series(
        "rowstream_streams_total",
        "counter",
        "Streams opened or resumed.",
        m.streams.load(Ordering::Relaxed),
    );
    series(
        "rowstream_resumes_total",
        "counter",
        "Resumes served.",
        m.resumes.load(Ordering::Relaxed),
    );
    series(
        "rowstream_rows_sent_total",
        "counter",
        "Rows sent (row_count of closed streams).",
        m.rows.load(Ordering::Relaxed),
    );
    series(
        "rowstream_bytes_sent_total",
        "counter",
        "Body bytes of closed streams.",
        m.bytes.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP rowstream_refusals_total Refusals answered, by code.\n# TYPE rowstream_refusals_total counter"
    );
    for (code, n) in lock(&m.refusals).iter() {
        let _ = writeln!(
            out,
            "rowstream_refusals_total{{{label},code=\"{code}\"}} {n}"
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
