//! Audit events of PROTOCOL.md §6, handed to an [`AuditSink`].

use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::cancel::lock;
use super::close::CloseReason;

/// One audit record: `{"event":"stream.opened","at_ms":...,...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum AuditEvent {
    /// A fresh stream opened.
    #[serde(rename = "stream.opened")]
    StreamOpened {
        /// Clock ms.
        at_ms: u64,
        /// Wire handle of the lease.
        lease: String,
        /// Principal.
        principal: String,
        /// Tenant.
        tenant: String,
        /// Pinned snapshot.
        snapshot_lsn: u64,
        /// SHA-256 (hex) of the query text; the text itself is not logged.
        query_hash: String,
    },
    /// A cursor was resumed by a new response.
    #[serde(rename = "stream.resumed")]
    StreamResumed {
        /// Clock ms.
        at_ms: u64,
        /// Lease of the new response.
        lease: String,
        /// The cursor's first lease.
        first_lease: String,
        /// Rows the client already held.
        after_rows: u64,
        /// Principal.
        principal: String,
        /// Tenant.
        tenant: String,
    },
    /// A lease ended, or a stream was refused for capacity (no lease then).
    #[serde(rename = "stream.closed")]
    StreamClosed {
        /// Clock ms.
        at_ms: u64,
        /// Wire handle, absent for capacity refusals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<String>,
        /// Why.
        reason: CloseReason,
        /// Finer cause: `end`, `cancel`, `disconnect`, `shutdown`, `panic`, an error code...
        cause: String,
        /// Rows from row 0, including a resume's skipped rows.
        row_count: u64,
        /// Bytes written by this response.
        bytes_written: u64,
        /// Lease lifetime in ms.
        duration_ms: u64,
        /// Principal.
        principal: String,
        /// Tenant.
        tenant: String,
    },
    /// The bearer JWT expires before the lease ends; the lease continues.
    #[serde(rename = "stream.token_expired_during_lease")]
    TokenExpiredDuringLease {
        /// Clock ms.
        at_ms: u64,
        /// Wire handle.
        lease: String,
        /// The token's `exp`, in ms.
        token_exp_ms: u64,
        /// When the lease's snapshot expires.
        lease_expires_at_ms: u64,
        /// Principal.
        principal: String,
        /// Tenant.
        tenant: String,
    },
    /// A resume or cancel was refused.
    #[serde(rename = "cursor.rejected")]
    CursorRejected {
        /// Clock ms.
        at_ms: u64,
        /// The protocol error code sent back.
        code: String,
        /// Principal.
        principal: String,
        /// Tenant.
        tenant: String,
    },
}

impl AuditEvent {
    /// The event name (`stream.opened`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::StreamOpened { .. } => "stream.opened",
            AuditEvent::StreamResumed { .. } => "stream.resumed",
            AuditEvent::StreamClosed { .. } => "stream.closed",
            AuditEvent::TokenExpiredDuringLease { .. } => "stream.token_expired_during_lease",
            AuditEvent::CursorRejected { .. } => "cursor.rejected",
        }
    }

    /// One JSON line, without the newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"event\":\"{}\"}}", self.name()))
    }
}

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    /// Records one event. Must not panic; a sink that cannot write drops the
    /// event (and may report it elsewhere).
    fn record(&self, event: &AuditEvent);
}

/// Keeps events in memory (tests, small embedded uses).
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemoryAuditSink {
    /// Empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything recorded.
    pub fn events(&self) -> Vec<AuditEvent> {
        lock(&self.events).clone()
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: &AuditEvent) {
        lock(&self.events).push(event.clone());
    }
}

/// Writes one JSON line per event to any writer (a file, stderr) and flushes.
#[derive(Debug)]
pub struct JsonLinesAuditSink<W: Write + Send> {
    out: Mutex<W>,
    /// Written as `"instance"` in every event (PROTOCOL §6, 1.1).
    instance: Option<String>,
}

impl<W: Write + Send> JsonLinesAuditSink<W> {
    /// Wraps a writer.
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
            instance: None,
        }
    }

    /// Names the server instance in every event (`"instance"`), as servers
    /// that share state with others do.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }
}

impl<W: Write + Send> AuditSink for JsonLinesAuditSink<W> {
    fn record(&self, event: &AuditEvent) {
        let mut line = match &self.instance {
            None => event.to_json_line(),
            Some(id) => match serde_json::to_value(event) {
                Ok(serde_json::Value::Object(mut m)) => {
                    m.insert("instance".into(), id.clone().into());
                    serde_json::Value::Object(m).to_string()
                }
                _ => event.to_json_line(),
            },
        };
        line.push('\n');
        let mut out = lock(&self.out);
        // An audit write failure must not break the stream it describes.
        let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn events_serialise_with_name_and_time() {
        let e = AuditEvent::StreamClosed {
            at_ms: 5,
            lease: None,
            reason: CloseReason::CapacityRefused,
            cause: "server_stream_capacity_exhausted".into(),
            row_count: 0,
            bytes_written: 0,
            duration_ms: 0,
            principal: "p".into(),
            tenant: "t".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["event"], "stream.closed");
        assert_eq!(v["at_ms"], 5);
        assert_eq!(v["reason"], "capacity_refused");
        assert!(v.get("lease").is_none(), "capacity refusals carry no lease");
        let back: AuditEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.name(), "stream.closed");
    }

    #[test]
    fn json_lines_sink_writes_one_line_per_event() {
        let sink = JsonLinesAuditSink::new(Vec::<u8>::new());
        for i in 0..3 {
            sink.record(&AuditEvent::CursorRejected {
                at_ms: i,
                code: "cursor_not_found".into(),
                principal: "p".into(),
                tenant: "t".into(),
            });
        }
        let out = String::from_utf8(sink.out.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(!lines[0].contains("instance"));
        let named = JsonLinesAuditSink::new(Vec::<u8>::new()).with_instance("node-a");
        named.record(&AuditEvent::CursorRejected {
            at_ms: 1,
            code: "cursor_not_found".into(),
            principal: "p".into(),
            tenant: "t".into(),
        });
        let v: serde_json::Value =
            serde_json::from_slice(&named.out.into_inner().unwrap()).unwrap();
        assert_eq!(v["instance"], "node-a");
        assert_eq!(v["event"], "cursor.rejected");
        assert!(
            lines[2].contains("\"event\":\"cursor.rejected\"") && lines[2].contains("\"at_ms\":2")
        );
    }

    #[test]
    fn memory_sink_keeps_order() {
        let sink = MemoryAuditSink::new();
        sink.record(&AuditEvent::StreamOpened {
            at_ms: 1,
            lease: "a".into(),
            principal: "p".into(),
            tenant: "t".into(),
            snapshot_lsn: 3,
            query_hash: "h".into(),
        });
        sink.record(&AuditEvent::CursorRejected {
            at_ms: 2,
            code: "cursor_expired".into(),
            principal: "p".into(),
            tenant: "t".into(),
        });
        let names: Vec<&str> = sink.events().iter().map(|e| e.name()).collect();
        assert_eq!(names, ["stream.opened", "cursor.rejected"]);
    }
}
