//! [`RawStream`]: one logical stream over all its responses, handed out one
//! network chunk at a time as raw row values.
//!
//! The verifier runs with external hashing: this module owns the
//! [`PrefixHasher`] (so its state can be exported after every chunk, for
//! `rowstream export`'s state file) and reports its running digest back to
//! the [`StreamVerifier`], which checks the `end` line against it.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{refusal, Error};
use super::{Client, Query, Summary};
use crate::core::close::CloseReason;
use crate::core::digest::{is_hex_of_len, HasherState, PrefixHasher};
use crate::core::framer::NdjsonFramer;
use crate::core::protocol::{
    ControlLine, ErrorBody, OpenFrame, ResumeRequest, StreamEvent, StreamVerifier, ROW_PREFIX,
};

/// Where a stream can be continued from, in this process or a later one:
/// its cursor, the rows held and the exported digest state of those rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The stream's 48-hex cursor.
    pub cursor: String,
    /// Rows held (`after_rows` of the resume).
    pub rows: u64,
    /// The [`PrefixHasher`] state after those rows (`rows` equal to them).
    pub hasher: HasherState,
}

/// The row values of one network chunk, as the server sent them (the JSON
/// text inside `{"row":…}`).
#[derive(Debug, Default)]
pub struct Batch {
    buf: String,
    ends: Vec<usize>,
    opened: bool,
}

impl Batch {
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.opened = false;
    }

    fn push(&mut self, value: &str) {
        self.buf.push_str(value);
        self.ends.push(self.buf.len());
    }

    /// Rows in this batch.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the batch holds no row (e.g. only an `open` line).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// True when this batch began a response (its `open` line was in it;
    /// [`RawStream::summary`] has the columns).
    pub fn opened(&self) -> bool {
        self.opened
    }

    /// Row `i`'s value text.
    pub fn value(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.buf[start..end])
    }

    /// Every row value text, in order.
    pub fn values(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len()).filter_map(|i| self.value(i))
    }
}

/// The next request's body.
#[derive(Debug, Clone)]
enum NextRequest {
    Fresh(Query),
    Resume(ResumeRequest),
}

/// One logical stream over all its responses (fresh, then resumes).
pub struct RawStream {
    client: Client,
    next: NextRequest,
    send_count: bool,
    verifier: StreamVerifier,
    hasher: PrefixHasher,
    framer: NdjsonFramer,
    response: Option<reqwest::Response>,
    open_seen: bool,
    progressed: bool,
    in_band_error: Option<ErrorBody>,
    failures: u32,
    batch: Batch,
    summary: Summary,
    finished: bool,
    cancel_on_drop: bool,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// How one request or read went.
enum Step {
    /// Dropped connection, undecodable body, or a retryable refusal.
    Interrupted {
        message: String,
        retry_after: Option<Duration>,
        refusal: Option<Error>,
    },
    Fatal(Error),
}

/// `{"row": <raw>}` for row lines that are not in the server's exact form.
#[derive(Deserialize)]
struct RowEnvelope<'a> {
    #[serde(borrow)]
    row: &'a RawValue,
}

/// `open` fields of PROTOCOL 1.1 the core's `OpenFrame` does not carry.
#[derive(Deserialize)]
struct OpenTotals {
    open: OpenTotalsInner,
}

#[derive(Deserialize)]
struct OpenTotalsInner {
    #[serde(default)]
    total_rows: Option<u64>,
    #[serde(default)]
    total_rows_exact: Option<bool>,
}

impl RawStream {
    fn new(client: Client, next: NextRequest) -> RawStream {
        let framer = NdjsonFramer::with_max_line_bytes(client.inner.max_line_bytes);
        RawStream {
            client,
            next,
            send_count: true,
            verifier: StreamVerifier::with_external_hashing(),
            hasher: PrefixHasher::new(),
            framer,
            response: None,
            open_seen: false,
            progressed: false,
            in_band_error: None,
            failures: 0,
            batch: Batch::default(),
            summary: Summary {
                prefix_hash: PrefixHasher::new().hex_digest(),
                ..Summary::default()
            },
            finished: false,
            cancel_on_drop: true,
        }
    }

    pub(crate) fn fresh(client: Client, query: Query) -> RawStream {
        RawStream::new(client, NextRequest::Fresh(query))
    }

    pub(crate) fn resumed(client: Client, point: &ResumePoint) -> Result<RawStream, Error> {
        let invalid = |m: String| Error::InvalidResumePoint(m);
        if !is_hex_of_len(&point.cursor, 48) {
            return Err(invalid(format!(
                "{:?} is not a 48-hex cursor",
                point.cursor
            )));
        }
        if point.hasher.rows != point.rows {
            return Err(invalid(format!(
                "the digest state covers {} rows, the point {}",
                point.hasher.rows, point.rows
            )));
        }
        let hasher = PrefixHasher::from_state(point.hasher.clone())
            .map_err(|e| invalid(format!("digest state: {e}")))?;
        let digest = hasher.hex_digest();
        let mut verifier = verifier_at(&point.cursor, point.rows, &digest)
            .map_err(|e| invalid(format!("cannot restore the verifier: {e}")))?;
        let resume = verifier
            .begin_resume()
            .ok_or_else(|| invalid("the restored verifier has no cursor".into()))?;
        let mut s = RawStream::new(client, NextRequest::Resume(resume));
        s.verifier = verifier;
        s.hasher = hasher;
        s.summary.row_count = point.rows;
        s.summary.prefix_hash = digest;
        s.summary.cursor = Some(point.cursor.clone());
        s.summary.resumes = 1;
        s.summary.resumed_from.push(point.rows);
        Ok(s)
    }

    /// What the stream did so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The batch the last [`RawStream::next_batch`] filled.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Row `i` of the current batch.
    pub(crate) fn batch_value(&self, i: usize) -> Option<&str> {
        self.batch.value(i)
    }

    /// Whether dropping the stream before its end cancels the cursor
    /// (default true). `rowstream export` turns it off: its cursor is
    /// resumed by the next run.
    pub fn set_cancel_on_drop(&mut self, cancel: bool) {
        self.cancel_on_drop = cancel;
    }

    /// Where this stream could be continued from now: the cursor and the
    /// digest state of every row handed out so far (`None` without a cursor).
    pub fn resume_point(&self) -> Option<ResumePoint> {
        let cursor = self.summary.cursor.clone()?;
        let mut hasher = self.hasher.export_state();
        // The hasher is fed one batch of row lines per call, so its own row
        // count is the number of batches; the state carries the real one.
        hasher.rows = self.summary.row_count;
        Some(ResumePoint {
            cursor,
            rows: self.summary.row_count,
            hasher,
        })
    }

    /// Cancels the cursor now (when the stream has one and has not ended)
    /// and waits for the server's answer.
    pub async fn cancel(mut self) {
        self.cancel_on_drop = false;
        self.response = None;
        if !self.summary.verified {
            if let Some(c) = self.summary.cursor.clone() {
                let _ = self.client.cancel(&c).await;
            }
        }
    }

    /// The rows of the next network chunk; `Ok(None)` once the stream ended
    /// verified ([`Summary::verified`]). Resumes by itself after a dropped
    /// connection. After an error the stream is over (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// Every [`Error`] a stream can end with.
    pub async fn next_batch(&mut self) -> Result<Option<&Batch>, Error> {
        self.batch.clear();
        if self.finished {
            return Ok(None);
        }
        match self.advance().await {
            Ok(true) => Ok(Some(&self.batch)),
            Ok(false) => {
                self.finished = true;
                Ok(None)
            }
            Err(e) => {
                self.finished = true;
                self.response = None;
                Err(e)
            }
        }
    }

    /// Fills the batch; false at the verified end.
    async fn advance(&mut self) -> Result<bool, Error> {
        loop {
            if self.summary.verified {
                return Ok(false);
            }
            if self.response.is_none() {
                match self.send().await {
                    Ok(res) => {
                        self.response = Some(res);
                        self.framer =
                            NdjsonFramer::with_max_line_bytes(self.client.inner.max_line_bytes);
                        self.open_seen = false;
                        self.progressed = false;
                    }
                    Err(Step::Fatal(e)) => return Err(e),
                    Err(Step::Interrupted {
                        message,
                        retry_after,
                        refusal,
                    }) => {
                        self.recover(message, retry_after, refusal).await?;
                        continue;
                    }
                }
            }
            let res = self.response.as_mut().expect("a response");
            match res.chunk().await {
                Ok(Some(bytes)) => {
                    self.summary.bytes += bytes.len() as u64;
                    self.process(&bytes)?;
                    if !self.batch.is_empty() || self.batch.opened || self.summary.verified {
                        return Ok(true);
                    }
                }
                Ok(None) => {
                    self.response = None;
                    self.end_of_body()?;
                    if self.summary.verified {
                        return Ok(true);
                    }
                    if let Some(e) = self.in_band_error.take() {
                        return Err(Error::Stream {
                            code: e.code,
                            message: e.message,
                        });
                    }
                    self.recover("the body ended without an end line".into(), None, None)
                        .await?;
                    if !self.batch.is_empty() {
                        return Ok(true);
                    }
                }
                Err(e) => {
                    self.response = None;
                    self.recover(describe(&e), None, None).await?;
                }
            }
        }
    }

    /// Sends the next request; a refused `count` field is dropped once.
    async fn send(&mut self) -> Result<reqwest::Response, Step> {
        loop {
            let (body, resume) = match &self.next {
                NextRequest::Fresh(q) => (q.body(self.send_count), false),
                NextRequest::Resume(r) => (
                    serde_json::to_value(r).expect("a resume request serialises"),
                    true,
                ),
            };
            let sent_count = !resume && body.get("count").is_some();
            let res = self
                .client
                .post(&self.client.inner.stream_url, &body)
                .send()
                .await;
            let res = match res {
                Ok(r) => r,
                Err(e) => {
                    return Err(Step::Interrupted {
                        message: describe(&e),
                        retry_after: None,
                        refusal: None,
                    })
                }
            };
            if res.status().is_success() {
                return Ok(res);
            }
            let status = res.status().as_u16();
            let err = refusal(res, resume).await;
            if let Error::Refused { code, message, .. } = &err {
                // A PROTOCOL 1.0 server refuses the unknown field `count`
                // (`400 bad_request`, naming it): ask again without it.
                if sent_count && status == 400 && code == "bad_request" && message.contains("count")
                {
                    self.send_count = false;
                    continue;
                }
            }
            if resume && (status == 429 || status >= 500) {
                let retry_after = match &err {
                    Error::Refused { retry_after, .. } => *retry_after,
                    _ => None,
                };
                return Err(Step::Interrupted {
                    message: err.to_string(),
                    retry_after,
                    refusal: Some(err),
                });
            }
            return Err(Step::Fatal(err));
        }
    }

    /// Frames, verifies and hashes one chunk of a response body.
    fn process(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut failure: Option<Error> = None;
        let RawStream {
            framer,
            verifier,
            batch,
            summary,
            open_seen,
            in_band_error,
            ..
        } = self;
        let framed = framer.push(chunk, |line| {
            if failure.is_none() {
                if let Err(e) = accept(verifier, batch, summary, open_seen, in_band_error, line) {
                    failure = Some(e);
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        framed?;
        self.hashed()
    }

    /// The body ended: a last line without newline is taken when it is a
    /// control line (an `end`); a row cut by the drop is not.
    fn end_of_body(&mut self) -> Result<(), Error> {
        let mut failure: Option<Error> = None;
        let RawStream {
            framer,
            verifier,
            batch,
            summary,
            open_seen,
            in_band_error,
            ..
        } = self;
        let framed = framer.finish(|line| {
            if line.as_bytes().starts_with(b"{\"row\"") {
                return;
            }
            if let Err(e) = accept(verifier, batch, summary, open_seen, in_band_error, line) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if framed.is_err() {
            // A cut, over-long or broken last piece: dropped with the drop.
        }
        self.hashed()
    }

    /// Hashes the row lines of this chunk and reports the digest to the
    /// verifier (which checks an `end` line against it).
    fn hashed(&mut self) -> Result<(), Error> {
        let input = self.verifier.hash_input();
        let ended = self.summary.end_reason.is_some() && !self.summary.verified;
        if input.is_empty() && !ended {
            return Ok(());
        }
        if !input.is_empty() {
            self.hasher.update_line(input);
            self.progressed = true;
        }
        let digest = self.hasher.hex_digest();
        self.verifier.input_hashed(&digest)?;
        self.summary.row_count = self.verifier.rows();
        self.summary.prefix_hash = digest;
        if let Some(end) = self.verifier.end() {
            if end.reason == CloseReason::Ok {
                self.summary.verified = true;
                self.summary.prefix_hash = end.prefix_hash.clone();
            } else if let Some(e) = self.in_band_error.take() {
                return Err(Error::Stream {
                    code: e.code,
                    message: e.message,
                });
            } else {
                return Err(Error::Stream {
                    code: end.reason.as_str().to_owned(),
                    message: format!("the server ended the stream early ({})", end.reason),
                });
            }
        }
        Ok(())
    }

    /// After an interruption: resume from the rows held (with backoff), or
    /// fail when there is no cursor or the retries ran out.
    async fn recover(
        &mut self,
        message: String,
        retry_after: Option<Duration>,
        refusal: Option<Error>,
    ) -> Result<(), Error> {
        let rows = self.verifier.rows();
        let resume = if self.open_seen || self.verifier.cursor().is_some() {
            self.verifier.begin_resume()
        } else {
            None
        };
        if resume.is_none() && (rows > 0 || self.open_seen) {
            return Err(Error::NotResumable {
                rows,
                reason: self.summary.reason.clone(),
                message,
            });
        }
        let retry = self.client.inner.retry;
        self.failures = if self.progressed {
            1
        } else {
            self.failures + 1
        };
        if self.failures > retry.max_retries {
            if let Some(r) = refusal {
                return Err(r);
            }
            return Err(Error::Interrupted {
                rows,
                retries: retry.max_retries,
                message,
            });
        }
        let exp = 2u32.saturating_pow(self.failures - 1);
        let full = retry.backoff.saturating_mul(exp).min(retry.max_backoff);
        let mut delay = full / 2 + full.mul_f64(jitter() / 2.0);
        if let Some(ra) = retry_after {
            delay = delay.max(ra.min(retry.max_backoff));
        }
        tokio::time::sleep(delay).await;
        if let Some(r) = resume {
            self.summary.resumes += 1;
            self.summary.resumed_from.push(r.after_rows);
            self.next = NextRequest::Resume(r);
        }
        self.open_seen = false;
        self.progressed = false;
        Ok(())
    }
}

/// Takes one framed line.
fn accept(
    verifier: &mut StreamVerifier,
    batch: &mut Batch,
    summary: &mut Summary,
    open_seen: &mut bool,
    in_band_error: &mut Option<ErrorBody>,
    line: &str,
) -> Result<(), Error> {
    match verifier.accept(line)? {
        StreamEvent::Row => {
            let b = line.as_bytes();
            if b.starts_with(ROW_PREFIX) && b.ends_with(b"}") {
                batch.push(&line[ROW_PREFIX.len()..line.len() - 1]);
            } else {
                let env: RowEnvelope<'_> = serde_json::from_str(line).map_err(|e| {
                    crate::core::protocol::ClientError::MalformedLine {
                        line: 0,
                        message: format!("a row line is not {{\"row\":<value>}}: {e}"),
                    }
                })?;
                batch.push(env.row.get());
            }
        }
        StreamEvent::Open(open) => {
            *open_seen = true;
            batch.opened = true;
            if summary.resumable.is_none() {
                summary.resumable = Some(open.resumable);
                summary.reason = open.reason.clone();
                summary.columns = open.columns.clone();
                if let Ok(t) = serde_json::from_str::<OpenTotals>(line) {
                    summary.total_rows = t.open.total_rows;
                    summary.total_rows_exact = t.open.total_rows_exact.unwrap_or(false);
                }
            }
            if let Some(c) = open.cursor {
                summary.cursor = Some(c);
            }
        }
        StreamEvent::Error(body) => *in_band_error = Some(body),
        StreamEvent::End(end) => summary.end_reason = Some(end.reason),
        StreamEvent::Ignored => {}
    }
    Ok(())
}

/// A verifier holding `rows` rows of the stream with `cursor`, whose digest
/// is `digest_hex`, ready for [`StreamVerifier::begin_resume`].
///
/// The core's verifier has no constructor from a saved position, so the
/// position is replayed: a synthetic `open` line carrying the cursor, then
/// `rows` placeholder row lines whose hash input is discarded — the digest
/// reported for them is the restored one. It costs about 20 ns per row
/// (some 20 ms for a million rows) and no network.
fn verifier_at(
    cursor: &str,
    rows: u64,
    digest_hex: &str,
) -> Result<StreamVerifier, crate::core::protocol::ClientError> {
    let mut v = StreamVerifier::with_external_hashing();
    let open = OpenFrame {
        lease: "0".repeat(32),
        snapshot_lsn: 0,
        resumable: true,
        reason: None,
        cursor: Some(cursor.to_owned()),
        expires_at_ms: 0,
        columns: Vec::new(),
        after_rows: 0,
        total: None,
    };
    v.accept(&ControlLine::Open(open).to_json())?;
    for i in 0..rows {
        v.accept("{\"row\":0}")?;
        if i % 65_536 == 65_535 {
            v.input_hashed(digest_hex)?;
        }
    }
    v.input_hashed(digest_hex)?;
    Ok(v)
}

/// A reqwest error with its causes (`error decoding response body: …`).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A value in `[0, 1)` for the backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

impl Drop for RawStream {
    fn drop(&mut self) {
        if !self.cancel_on_drop || self.summary.verified {
            return;
        }
        let Some(cursor) = self.summary.cursor.clone() else {
            return;
        };
        // Best effort, like the JS client: the cursor expires with its TTL
        // anyway. Needs a running tokio runtime to send the request.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            rt.spawn(async move {
                let _ = client.cancel(&cursor).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::prefix_hash_of;

    #[test]
    fn a_restored_verifier_resumes_at_its_rows_with_their_digest() {
        let cursor = "ab".repeat(24);
        let digest = prefix_hash_of(["{\"row\":[1]}", "{\"row\":[2]}"]);
        let mut v = verifier_at(&cursor, 70_000, &digest).unwrap();
        let r = v.begin_resume().unwrap();
        assert_eq!(
            (r.cursor.as_str(), r.after_rows, r.prefix_hash.as_str()),
            (cursor.as_str(), 70_000, digest.as_str())
        );
        assert!(v.hash_input().is_empty());
    }

    #[test]
    fn batches_hand_out_values_in_order() {
        let mut b = Batch::default();
        b.push("{\"id\":1}");
        b.push("[2]");
        assert_eq!(b.values().collect::<Vec<_>>(), ["{\"id\":1}", "[2]"]);
        assert_eq!((b.len(), b.value(2)), (2, None));
    }
}
