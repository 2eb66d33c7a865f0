//! Why a stream ended.

use serde::{Deserialize, Serialize};

/// The reason a stream closed: `end.reason` on the wire and `reason` in the
/// audit `stream.closed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Every row was sent.
    Ok,
    /// The cancel endpoint, a disconnect or a shutdown stopped it.
    Cancelled,
    /// The query failed mid-stream.
    Error,
    /// The pinned snapshot's TTL ran out.
    SnapshotExpired,
    /// Refused for capacity before opening (audit only).
    CapacityRefused,
    /// An input stream's digest did not match (audit only).
    IntegrityFailed,
}

impl CloseReason {
    /// Every reason, in declaration order.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Ok,
        CloseReason::Cancelled,
        CloseReason::Error,
        CloseReason::SnapshotExpired,
        CloseReason::CapacityRefused,
        CloseReason::IntegrityFailed,
    ];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Ok => "ok",
            CloseReason::Cancelled => "cancelled",
            CloseReason::Error => "error",
            CloseReason::SnapshotExpired => "snapshot_expired",
            CloseReason::CapacityRefused => "capacity_refused",
            CloseReason::IntegrityFailed => "integrity_failed",
        }
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn wire_strings_are_stable() {
        let names: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "ok",
                "cancelled",
                "error",
                "snapshot_expired",
                "capacity_refused",
                "integrity_failed"
            ]
        );
        for r in CloseReason::ALL {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
            assert_eq!(CloseReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(CloseReason::parse("OK"), None);
    }
}
