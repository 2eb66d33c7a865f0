//! The client's errors: one enum, each variant with a stable code.

use std::time::Duration;

use crate::core::framer::FramerError;
use crate::core::protocol::ClientError;

/// Why a client stream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with an error status before the stream started
    /// (PROTOCOL §2's refusals; any status for a fresh query, a 4xx for a
    /// resume, or a 429/5xx for which the retries ran out).
    #[error("the server refused the {} ({status} {code}): {message}", if *.resume { "resume" } else { "request" })]
    Refused {
        /// HTTP status.
        status: u16,
        /// The body's `error.code` (`http_<status>` when the body had none).
        code: String,
        /// The body's `error.message`.
        message: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
        /// True when the refused request was a resume.
        resume: bool,
    },
    /// The rows do not verify: `digest_mismatch` (the `end` line's digest or
    /// count differs from the rows received), `protocol_error` or
    /// `malformed_line`.
    #[error(transparent)]
    Verification(#[from] ClientError),
    /// A line is too long or not UTF-8.
    #[error("the body cannot be framed: {0}")]
    Framing(#[from] FramerError),
    /// The stream ended early in-band: an `error` line (its code, e.g.
    /// `resource_limit_exceeded`), or an `end` line with reason `cancelled`,
    /// `error` or `snapshot_expired`.
    #[error("the stream ended with {code}: {message}")]
    Stream {
        /// The error line's code, or the end reason.
        code: String,
        /// What the server said.
        message: String,
    },
    /// The connection kept breaking and the retries ran out without
    /// progress; the stream has a cursor, so it can still be resumed later.
    #[error("the stream broke off after {rows} rows; gave up after {retries} retries without progress: {message}")]
    Interrupted {
        /// Rows held.
        rows: u64,
        /// Retries made.
        retries: u32,
        /// The last interruption.
        message: String,
    },
    /// The stream broke off and has no cursor (its query is not resumable,
    /// `open.reason` says why).
    #[error("the stream broke off after {rows} rows and is not resumable{}: {message}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NotResumable {
        /// Rows held.
        rows: u64,
        /// `open.reason`.
        reason: Option<String>,
        /// The interruption.
        message: String,
    },
    /// A row does not decode as the requested type.
    #[error("row {row} does not decode: {source}")]
    Decode {
        /// 0-based row number in the result.
        row: u64,
        /// serde's error.
        source: serde_json::Error,
    },
    /// A [`ResumePoint`](super::ResumePoint) is inconsistent.
    #[error("invalid resume point: {0}")]
    InvalidResumePoint(String),
    /// The HTTP stack failed outside a stream (building the client, the
    /// cancel request).
    #[error("HTTP: {0}")]
    Http(#[source] reqwest::Error),
}

/// Codes with which a resume is refused because the cursor is gone for good.
pub(crate) const CURSOR_GONE: &[&str] = &[
    "cursor_not_found",
    "cursor_expired",
    "cursor_cancelled",
    "snapshot_unavailable",
];

impl Error {
    /// A stable snake_case code: the server's code for [`Error::Refused`]
    /// and [`Error::Stream`], else `invalid_url`, `digest_mismatch`,
    /// `protocol_error`, `malformed_line`, `line_too_long`, `invalid_utf8`,
    /// `stream_interrupted`, `stream_not_resumable`, `row_decode_failed`,
    /// `invalid_resume_point` or `http_error`.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidUrl { .. } => "invalid_url",
            Error::Refused { code, .. } | Error::Stream { code, .. } => code,
            Error::Verification(e) => e.code(),
            Error::Framing(e) => e.code(),
            Error::Interrupted { .. } => "stream_interrupted",
            Error::NotResumable { .. } => "stream_not_resumable",
            Error::Decode { .. } => "row_decode_failed",
            Error::InvalidResumePoint(_) => "invalid_resume_point",
            Error::Http(_) => "http_error",
        }
    }

    /// True for a refused resume whose cursor is gone for good
    /// (`cursor_not_found`, `cursor_expired`, `cursor_cancelled`,
    /// `snapshot_unavailable`) and for a stream that ended with
    /// `snapshot_expired`: only a fresh query can go on.
    pub fn cursor_gone(&self) -> bool {
        match self {
            Error::Refused { code, resume, .. } => *resume && CURSOR_GONE.contains(&code.as_str()),
            Error::Stream { code, .. } => code == "snapshot_expired" || code == "cancelled",
            _ => false,
        }
    }

    /// True when the data received cannot be trusted: a digest or count
    /// mismatch, a body that breaks the protocol or cannot be framed, or a
    /// resume refused with `prefix_hash_mismatch`.
    pub fn is_verification_failure(&self) -> bool {
        match self {
            Error::Verification(_) | Error::Framing(_) => true,
            Error::Refused { code, .. } => code == "prefix_hash_mismatch",
            _ => false,
        }
    }
}

/// Reads a refusal body (`{"error":{"code","message"}}`, at most 64 KiB).
pub(crate) async fn refusal(res: reqwest::Response, resume: bool) -> Error {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    let mut res = res;
    while let Ok(Some(chunk)) = res.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 * 1024 {
            break;
        }
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{status}"));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    Error::Refused {
        status,
        code,
        message,
        retry_after,
        resume,
    }
}
