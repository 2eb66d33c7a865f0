//! The native client (feature `client`, not for wasm32): what `streamQuery`
//! does in JavaScript, for Rust programs and for `rowstream export`.
//!
//! [`Client::stream`] sends `POST /v1/query/stream` and hands out the rows
//! as `serde_json::Value` or any `Deserialize` type. Every row line goes
//! through the core's [`NdjsonFramer`](crate::core::framer::NdjsonFramer)
//! and [`StreamVerifier`](crate::core::protocol::StreamVerifier); the
//! stream is verified once the `end` line's digest matched
//! ([`Summary::verified`]). A dropped connection or a body that fails to
//! decode is resumed from the rows held (bounded retries without progress,
//! exponential backoff with jitter, `Retry-After`), as the JS client does.
//! Dropping a stream before its end cancels the server cursor (best effort:
//! [`RowStream::cancel`] waits for the answer).
//!
//! HTTP is [`reqwest`] (on hyper and hyper-util, which the server already
//! uses): it decodes `zstd`, `br` and `gzip` bodies and sends
//! `Accept-Encoding` for exactly those, so a compressing server (PROTOCOL
//! 1.1) is used as soon as it compresses. This build has no TLS backend:
//! `http://` URLs only.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rowstream::client::Error> {
//! use rowstream::client::{Client, Query};
//! let client = Client::builder("http://127.0.0.1:8080").token("s3cret").build()?;
//! let mut rows = client.stream::<serde_json::Value>(Query::new("SELECT id, name FROM t"));
//! while let Some(row) = rows.next().await {
//!     println!("{}", row?);
//! }
//! assert!(rows.summary().verified);
//! # Ok(()) }
//! ```

mod error;
pub mod export;
mod raw;
mod rows;
mod state;
mod table;

use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
pub use raw::{Batch, RawStream, ResumePoint};
pub use rows::RowStream;

use crate::core::close::CloseReason;
use crate::core::framer::DEFAULT_MAX_LINE_BYTES;
use crate::core::protocol::Column;

/// Row shape of the stream (PROTOCOL §2): `{"id":1,…}` or `[1,…]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// One JSON object per row, keyed by column name (the server's default).
    #[default]
    Object,
    /// One JSON array per row, ordered as `open.columns`.
    Array,
}

impl Shape {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Object => "object",
            Shape::Array => "array",
        }
    }
}

/// The `count` request field of PROTOCOL 1.1: whether the `open` line
/// should carry a total (`total_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Count {
    /// Ask for no total (the field is not sent).
    #[default]
    None,
    /// The planner's estimate.
    Estimated,
    /// An exact count (the server scans the result once more).
    Exact,
}

impl Count {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Count::None => "none",
            Count::Estimated => "estimated",
            Count::Exact => "exact",
        }
    }
}

/// A fresh query: SQL, parameters, shape and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    sql: String,
    params: Option<serde_json::Value>,
    shape: Shape,
    count: Count,
}

impl Query {
    /// A query with no parameters, shape `object`, no count.
    pub fn new(sql: impl Into<String>) -> Query {
        Query {
            sql: sql.into(),
            params: None,
            shape: Shape::Object,
            count: Count::None,
        }
    }

    /// Positional (`[...]`) or named (`{...}`) parameters.
    #[must_use]
    pub fn params(mut self, params: serde_json::Value) -> Query {
        self.params = Some(params);
        self
    }

    /// The row shape.
    #[must_use]
    pub fn shape(mut self, shape: Shape) -> Query {
        self.shape = shape;
        self
    }

    /// Ask for a total in the `open` line. A server that does not know the
    /// field yet (PROTOCOL 1.0 answers `400 bad_request` naming it) is asked
    /// again without it, once; the stream then has no total.
    #[must_use]
    pub fn count(mut self, count: Count) -> Query {
        self.count = count;
        self
    }

    /// The request body; `with_count` false leaves `count` out.
    fn body(&self, with_count: bool) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("query".into(), self.sql.clone().into());
        if let Some(p) = &self.params {
            body.insert("params".into(), p.clone());
        }
        if self.shape != Shape::Object {
            body.insert("shape".into(), self.shape.as_str().into());
        }
        if with_count && self.count != Count::None {
            body.insert("count".into(), self.count.as_str().into());
        }
        serde_json::Value::Object(body)
    }
}

/// What a stream did so far; final once the stream ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Rows received and handed out, from row 0 (rows held from an earlier
    /// run included when the stream continues a [`ResumePoint`]).
    pub row_count: u64,
    /// Digest of those rows (PROTOCOL §2.1); the server's `end.prefix_hash`
    /// once verified.
    pub prefix_hash: String,
    /// True once the `end` line came with reason `ok` and its row count and
    /// digest matched the rows received.
    pub verified: bool,
    /// Resume requests sent (one per attempt).
    pub resumes: u32,
    /// `after_rows` of each resume request, in order.
    pub resumed_from: Vec<u64>,
    /// The stream's cursor, once an `open` line carried one.
    pub cursor: Option<String>,
    /// `open.resumable` of the first response.
    pub resumable: Option<bool>,
    /// `open.reason` (why not resumable).
    pub reason: Option<String>,
    /// Result columns (`open.columns`).
    pub columns: Vec<Column>,
    /// `open.total_rows` (PROTOCOL 1.1), when the server sent one.
    pub total_rows: Option<u64>,
    /// `open.total_rows_exact`.
    pub total_rows_exact: bool,
    /// Decoded body bytes received, over every response.
    pub bytes: u64,
    /// `end.reason`, once an `end` line came.
    pub end_reason: Option<CloseReason>,
}

/// Retry policy after an interruption (dropped connection, undecodable
/// body, `429`/`5xx` answer to a resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries in a row that bring no new row before giving up (5).
    pub max_retries: u32,
    /// First backoff (250 ms); doubled per retry without progress, jittered
    /// to 50–100 %, capped at `max_backoff`.
    pub backoff: Duration,
    /// Longest wait, `Retry-After` included (30 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A handle on one server; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    stream_url: reqwest::Url,
    cancel_url: reqwest::Url,
    token: Option<String>,
    retry: RetryPolicy,
    max_line_bytes: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stream_url", &self.inner.stream_url.as_str())
            .field("token", &self.inner.token.as_ref().map(|_| "…"))
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    retry: RetryPolicy,
    max_line_bytes: usize,
    connect_timeout: Duration,
    read_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// `Authorization: Bearer <token>` on every request.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Longest line accepted (default 16 MiB); a longer one fails the stream.
    #[must_use]
    pub fn max_line_bytes(mut self, n: usize) -> Self {
        self.max_line_bytes = n;
        self
    }

    /// Connect timeout (10 s).
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Longest silence on a response before it counts as dropped and is
    /// resumed (120 s; `None`: wait forever). The server's heartbeat lines
    /// (PROTOCOL 1.1) keep a slow query's response alive.
    #[must_use]
    pub fn read_timeout(mut self, d: Option<Duration>) -> Self {
        self.read_timeout = d;
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] when the base URL is not an `http://` URL;
    /// [`Error::Http`] when the HTTP stack cannot start.
    pub fn build(self) -> Result<Client, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: self.base.clone(),
            reason: reason.to_owned(),
        };
        let base = reqwest::Url::parse(&self.base).map_err(|e| invalid(&e.to_string()))?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "https needs a TLS backend, which this build of the client does not have",
                ))
            }
            _ => return Err(invalid("expected an http:// URL")),
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the base URL takes no query or fragment"));
        }
        let path = base.path().trim_end_matches('/').to_owned();
        let mut stream_url = base.clone();
        stream_url.set_path(&format!("{path}/v1/query/stream"));
        let mut cancel_url = base;
        cancel_url.set_path(&format!("{path}/v1/query/stream/cancel"));
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("rowstream/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = self.read_timeout {
            http = http.read_timeout(t);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http: http.build().map_err(Error::Http)?,
                stream_url,
                cancel_url,
                token: self.token,
                retry: self.retry,
                max_line_bytes: self.max_line_bytes,
            }),
        })
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://127.0.0.1:8080`).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::builder(base_url).build()
    }

    /// A builder for a client of the server at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            token: None,
            retry: RetryPolicy::default(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Some(Duration::from_secs(120)),
        }
    }

    /// The rows of `query`, each decoded as `T` (`serde_json::Value` for
    /// any row). Nothing is sent before the first [`RowStream::next`].
    pub fn stream<T: serde::de::DeserializeOwned>(&self, query: Query) -> RowStream<T> {
        RowStream::new(self.raw(query))
    }

    /// The rows of `query` as raw JSON text, one network chunk at a time
    /// (what `rowstream export` writes).
    pub fn raw(&self, query: Query) -> RawStream {
        RawStream::fresh(self.clone(), query)
    }

    /// Continues a stream from a [`ResumePoint`] saved by an earlier
    /// [`RawStream`] (in this process or another): the first request is a
    /// resume with `after_rows = point.rows` and its digest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResumePoint`] when the point is inconsistent.
    pub fn resume_raw(&self, point: &ResumePoint) -> Result<RawStream, Error> {
        RawStream::resumed(self.clone(), point)
    }

    /// Cancels a cursor (`POST /v1/query/stream/cancel`): the running
    /// stream stops and later resumes are refused.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] with the server's code (`cursor_not_found`, ...),
    /// [`Error::Http`] when the request could not be sent.
    pub async fn cancel(&self, cursor: &str) -> Result<(), Error> {
        let res = self
            .post(
                &self.inner.cancel_url,
                &serde_json::json!({ "cursor": cursor }),
            )
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(Error::Http)?;
        if res.status().is_success() {
            return Ok(());
        }
        Err(error::refusal(res, false).await)
    }

    fn post(&self, url: &reqwest::Url, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let mut req = self
            .inner
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .body(body.to_string());
        if let Some(t) = &self.inner.token {
            req = req.bearer_auth(t);
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_and_bodies() {
        let c = Client::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            c.inner.stream_url.as_str(),
            "http://127.0.0.1:8080/v1/query/stream"
        );
        let c = Client::new("http://h/api").unwrap();
        assert_eq!(
            c.inner.cancel_url.as_str(),
            "http://h/api/v1/query/stream/cancel"
        );
        for bad in ["https://h", "ftp://h", "h:80", "http://h/?x=1"] {
            let e = Client::new(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_url", "{bad}");
        }
        let q = Query::new("SELECT 1")
            .params(serde_json::json!([1]))
            .shape(Shape::Array)
            .count(Count::Exact);
        assert_eq!(
            q.body(true),
            serde_json::json!({"query":"SELECT 1","params":[1],"shape":"array","count":"exact"})
        );
        assert_eq!(
            q.body(false),
            serde_json::json!({"query":"SELECT 1","params":[1],"shape":"array"})
        );
        assert_eq!(Query::new("x").body(true), serde_json::json!({"query":"x"}));
    }
}
