//! The engine of `rowstream export`: a query result into a file, verified
//! and resumable across runs.
//!
//! Rows go to `FILE.partial`; after every network chunk the rows of that
//! chunk are written through to the OS and `FILE.partial.state` records the
//! cursor, the complete rows and bytes written and the exported
//! [`PrefixHasher`](crate::core::digest::PrefixHasher) state. A later run
//! of the same export (same server, query, parameters, shape and format)
//! truncates `FILE.partial` to the recorded bytes and resumes the cursor
//! with `after_rows` = the recorded rows and their digest. `FILE` appears
//! (a rename) only once the `end` line's digest matched.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::state::{StateFile, StateRecord};
use super::table::{CsvWriter, RowError};
use super::{Client, Count, Error, Query, RawStream, ResumePoint, RetryPolicy, Shape};
use crate::core::digest::{sha256_hex, to_hex, HasherState};

pub use super::state::read_state;

/// Exit code: complete and verified.
pub const EXIT_OK: u8 = 0;
/// Exit code: anything else (bad arguments, `FILE` exists, I/O errors).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the server refused (any 4xx, `401` included, or an in-band
/// error line); its code is printed.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: the rows did not verify (digest or count mismatch, a body
/// breaking the protocol, `prefix_hash_mismatch`); `FILE` is not written
/// and the partial files are removed.
pub const EXIT_DIGEST_MISMATCH: u8 = 4;
/// Exit code: interrupted (connection lost and the retries ran out, a 5xx,
/// Ctrl+C); running the same command again resumes.
pub const EXIT_INTERRUPTED: u8 = 5;
/// Exit code: the partial export cannot be resumed (cursor expired or
/// unknown, snapshot gone, query not resumable, partial file of another
/// export); `--restart` starts over.
pub const EXIT_NOT_RESUMABLE: u8 = 6;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One row value per line, byte for byte as the server sent it.
    #[default]
    Ndjson,
    /// RFC 4180 CSV with a header row (see the module `table`).
    Csv,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Base URL of the server.
    pub server: String,
    /// Bearer token.
    pub token: Option<String>,
    /// The SQL.
    pub query: String,
    /// Parameters (a JSON array or object).
    pub params: Option<serde_json::Value>,
    /// Row shape.
    pub shape: Shape,
    /// Output format.
    pub format: Format,
    /// Output file; `None` writes to stdout (no resume across runs then).
    pub output: Option<PathBuf>,
    /// Start over when the partial export cannot be resumed.
    pub restart: bool,
    /// Overwrite an existing `FILE`.
    pub force: bool,
    /// No progress and no final summary on stderr.
    pub quiet: bool,
    /// Whether to ask the server for a total (progress percentage and ETA).
    pub count: Count,
    /// Retries within one run.
    pub retry: RetryPolicy,
}

/// What a successful export did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOutcome {
    /// Rows in the output.
    pub rows: u64,
    /// Bytes in the output.
    pub bytes: u64,
    /// The verified digest (`end.prefix_hash`).
    pub prefix_hash: String,
    /// Resume requests sent in this run.
    pub resumes: u32,
    /// Rows recorded by an earlier run that this run continued from.
    pub continued_from: Option<u64>,
    /// True when a partial export was discarded (`--restart`).
    pub restarted: bool,
}

/// Why an export failed; [`ExportError::exit_code`] maps it to the command's
/// exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad arguments, or `FILE` exists without `--force`.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The stream failed.
    #[error("{0}")]
    Client(#[from] Error),
    /// The partial export cannot be continued (without the server's say).
    #[error("{0}")]
    NotResumable(String),
    /// Ctrl+C: the state is saved.
    #[error("interrupted after {rows} rows; run the same command again to resume")]
    Interrupted {
        /// Rows recorded.
        rows: u64,
    },
}

impl ExportError {
    /// The exit code of the command for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::Usage(_) | ExportError::Io { .. } => EXIT_FAILURE,
            ExportError::NotResumable(_) => EXIT_NOT_RESUMABLE,
            ExportError::Interrupted { .. } => EXIT_INTERRUPTED,
            ExportError::Client(e) => {
                if e.is_verification_failure() {
                    EXIT_DIGEST_MISMATCH
                } else if e.cursor_gone() {
                    EXIT_NOT_RESUMABLE
                } else {
                    match e {
                        Error::Refused { status, .. } if *status < 500 => EXIT_REFUSED,
                        Error::Stream { .. } => EXIT_REFUSED,
                        Error::Refused { .. } | Error::Interrupted { .. } | Error::Http(_) => {
                            EXIT_INTERRUPTED
                        }
                        Error::NotResumable { .. } | Error::InvalidResumePoint(_) => {
                            EXIT_NOT_RESUMABLE
                        }
                        _ => EXIT_FAILURE,
                    }
                }
            }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The partial output beside `output`.
pub fn partial_path(output: &Path) -> PathBuf {
    with_suffix(output, ".partial")
}

/// The state file beside `output`.
pub fn state_path(output: &Path) -> PathBuf {
    with_suffix(output, ".partial.state")
}

/// Runs an export.
///
/// # Errors
///
/// [`ExportError`]; the partial files are kept unless the rows did not
/// verify.
pub async fn run(opts: &ExportOptions) -> Result<ExportOutcome, ExportError> {
    if let Some(p) = &opts.params {
        if !p.is_array() && !p.is_object() {
            return Err(ExportError::Usage(
                "--params must be a JSON array or object".into(),
            ));
        }
    }
    let client = Client::builder(&opts.server)
        .token(opts.token.clone().unwrap_or_default())
        .retry(opts.retry)
        .build()?;
    let mut query = Query::new(&opts.query).shape(opts.shape).count(opts.count);
    if let Some(p) = &opts.params {
        query = query.params(p.clone());
    }
    let progress = Progress::new(!opts.quiet && std::io::stderr().is_terminal());
    let outcome = match &opts.output {
        Some(path) => to_file(opts, &client, query, path, &progress).await,
        None => to_stdout(opts, &client, query, &progress).await,
    };
    progress.finish();
    outcome
}

/// Where the output goes and how rows become bytes.
struct Sink<W: Write> {
    out: std::io::BufWriter<W>,
    csv: Option<CsvWriter>,
    format: Format,
    shape: Shape,
    /// Bytes written (and, after `flush`, handed to the OS).
    bytes: u64,
}

impl<W: Write> Sink<W> {
    fn new(w: W, format: Format, shape: Shape, bytes: u64) -> Sink<W> {
        Sink {
            out: std::io::BufWriter::with_capacity(1 << 20, w),
            csv: None,
            format,
            shape,
            bytes,
        }
    }

    /// Writes one batch; `header` writes the CSV header first.
    fn write_batch(&mut self, stream: &RawStream, header: bool) -> Result<(), WriteError> {
        let batch = stream.batch();
        match self.format {
            Format::Ndjson => {
                for v in batch.values() {
                    self.out.write_all(v.as_bytes())?;
                    self.out.write_all(b"\n")?;
                    self.bytes += v.len() as u64 + 1;
                }
            }
            Format::Csv => {
                if self.csv.is_none() {
                    self.csv = Some(CsvWriter::new(&stream.summary().columns, self.shape));
                }
                let csv = self.csv.as_mut().expect("a CSV writer");
                let mut counted = Counting {
                    inner: &mut self.out,
                    n: 0,
                };
                if header {
                    csv.write_header(&mut counted)?;
                }
                let first = stream.summary().row_count - batch.len() as u64;
                for (i, v) in batch.values().enumerate() {
                    csv.write_row(&mut counted, first + i as u64, v)?;
                }
                self.bytes += counted.n;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

enum WriteError {
    Io(std::io::Error),
    Data(crate::core::protocol::ClientError),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl From<RowError> for WriteError {
    fn from(e: RowError) -> Self {
        match e {
            RowError::Io(e) => WriteError::Io(e),
            RowError::Data(e) => WriteError::Data(e),
        }
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The identity of an export: a partial file is only continued by the same one.
fn fingerprint(opts: &ExportOptions) -> String {
    let server = opts.server.trim_end_matches('/');
    sha256_hex(
        serde_json::json!({
            "server": server,
            "query": opts.query,
            "params": opts.params,
            "shape": opts.shape.as_str(),
            "format": opts.format.as_str(),
        })
        .to_string()
        .as_bytes(),
    )
}

/// Checks a recorded state against the partial file; the resume point.
fn resume_point_of(
    record: Option<&StateRecord>,
    fingerprint: &str,
    partial_len: Option<u64>,
) -> Result<ResumePoint, String> {
    let Some(r) = record else {
        return Err("the state file is unreadable".into());
    };
    if r.fingerprint != fingerprint {
        return Err(
            "the partial file belongs to a different export (server, query, parameters, shape or format differ)"
                .into(),
        );
    }
    let Some(cursor) = r.cursor.clone() else {
        return Err("the query is not resumable (the server issued no cursor)".into());
    };
    match partial_len {
        None => return Err("the partial file is missing".into()),
        Some(n) if n < r.bytes => {
            return Err(format!(
                "the partial file has {n} bytes, fewer than the {} recorded",
                r.bytes
            ))
        }
        Some(_) => {}
    }
    let bytes = hex_bytes(&r.hasher).ok_or("the recorded digest state is not hex")?;
    let hasher =
        HasherState::from_bytes(&bytes).map_err(|e| format!("recorded digest state: {e}"))?;
    Ok(ResumePoint {
        cursor,
        rows: r.rows,
        hasher,
    })
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How an export to a file begins.
struct Start {
    stream: RawStream,
    file: File,
    state: StateFile,
    record: StateRecord,
    bytes: u64,
    resumed: bool,
}

fn start_fresh(
    client: &Client,
    query: &Query,
    partial: &Path,
    state_path: &Path,
    fingerprint: &str,
) -> Result<Start, ExportError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(partial)
        .map_err(io(partial))?;
    let state = StateFile::create(state_path).map_err(io(state_path))?;
    let mut stream = client.raw(query.clone());
    stream.set_cancel_on_drop(false);
    Ok(Start {
        stream,
        file,
        state,
        record: StateRecord::new(fingerprint.to_owned()),
        bytes: 0,
        resumed: false,
    })
}

async fn to_file(
    opts: &ExportOptions,
    client: &Client,
    query: Query,
    output: &Path,
    progress: &Progress,
) -> Result<ExportOutcome, ExportError> {
    let partial = partial_path(output);
    let state_path = state_path(output);
    if output.exists() && !opts.force {
        return Err(ExportError::Usage(format!(
            "{} exists; pass --force to overwrite it",
            output.display()
        )));
    }
    let fp = fingerprint(opts);
    let mut restarted = false;
    let mut continued_from = None;
    let mut start = if state_path.exists() {
        let (state, record) = StateFile::open(&state_path).map_err(io(&state_path))?;
        let partial_len = std::fs::metadata(&partial).ok().map(|m| m.len());
        match resume_point_of(record.as_ref(), &fp, partial_len) {
            Ok(point) => {
                let record = record.expect("a record");
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&partial)
                    .map_err(io(&partial))?;
                // Drop what was written after the last recorded chunk.
                file.set_len(record.bytes).map_err(io(&partial))?;
                file.seek(SeekFrom::End(0)).map_err(io(&partial))?;
                let mut stream = client.resume_raw(&point)?;
                stream.set_cancel_on_drop(false);
                continued_from = Some(point.rows);
                Start {
                    stream,
                    file,
                    state,
                    bytes: record.bytes,
                    record,
                    resumed: true,
                }
            }
            Err(why) if opts.restart => {
                progress.note(&format!("starting over: {why}"));
                restarted = true;
                start_fresh(client, &query, &partial, &state_path, &fp)?
            }
            Err(why) => {
                return Err(ExportError::NotResumable(format!(
                    "cannot resume {}: {why}; pass --restart to start over",
                    partial.display()
                )))
            }
        }
    } else {
        start_fresh(client, &query, &partial, &state_path, &fp)?
    };

    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    'run: loop {
        let Start {
            stream,
            file,
            state,
            record,
            bytes,
            resumed,
        } = &mut start;
        let mut sink = Sink::new(&*file, opts.format, opts.shape, *bytes);
        let mut header_due = !*resumed && opts.format == Format::Csv;
        loop {
            let next = tokio::select! {
                r = stream.next_batch() => r.map(|b| b.is_some()),
                _ = &mut ctrl_c => {
                    return Err(ExportError::Interrupted { rows: record.rows });
                }
            };
            match next {
                Ok(true) => {}
                Ok(false) => break 'run,
                Err(e) if e.cursor_gone() && opts.restart && !restarted => {
                    progress.note(&format!("starting over: {e}"));
                    restarted = true;
                    continued_from = None;
                    drop(sink);
                    start = start_fresh(client, &query, &partial, &state_path, &fp)?;
                    continue 'run;
                }
                Err(e) => {
                    // Nothing to resume (a refused fresh query): no partial files.
                    let nothing = record.rows == 0 && record.cursor.is_none() && !*resumed;
                    if e.is_verification_failure() || nothing {
                        discard(&partial, &state_path);
                        if let Some(c) = &stream.summary().cursor {
                            let _ = client.cancel(c).await;
                        }
                    }
                    return Err(e.into());
                }
            }
            match sink.write_batch(stream, header_due && stream.batch().opened()) {
                Ok(()) => {}
                Err(WriteError::Io(e)) => return Err(io(&partial)(e)),
                Err(WriteError::Data(e)) => {
                    discard(&partial, &state_path);
                    return Err(Error::Verification(e).into());
                }
            }
            if stream.batch().opened() {
                header_due = false;
            }
            let summary = stream.summary();
            record.cursor = summary.cursor.clone();
            record.rows = summary.row_count;
            record.bytes = sink.bytes;
            record.hasher = stream
                .resume_point()
                .map(|p| to_hex(&p.hasher.to_bytes()))
                .unwrap_or_default();
            *bytes = sink.bytes;
            state.save(record).map_err(io(&state_path))?;
            progress.update(summary, sink.bytes);
        }
    }

    // Verified: the partial file becomes FILE.
    let Start {
        stream,
        file,
        state,
        bytes,
        ..
    } = start;
    // No fsync (as `curl -o`): the files are consistent after a process
    // crash or kill at any point; durability across a power loss is left to
    // the OS (an fsync of the whole file cost more than the rows after a
    // resume point of 90 %).
    drop(file);
    std::fs::rename(&partial, output).map_err(io(output))?;
    drop(state);
    let _ = std::fs::remove_file(&state_path);
    let summary = stream.summary().clone();
    let outcome = ExportOutcome {
        rows: summary.row_count,
        bytes,
        prefix_hash: summary.prefix_hash.clone(),
        resumes: summary.resumes,
        continued_from,
        restarted,
    };
    progress.done(&outcome, &output.display().to_string(), opts.quiet);
    Ok(outcome)
}

/// Removes the partial files of rows that did not verify.
fn discard(partial: &Path, state: &Path) {
    let _ = std::fs::remove_file(partial);
    let _ = std::fs::remove_file(state);
}

async fn to_stdout(
    opts: &ExportOptions,
    client: &Client,
    query: Query,
    progress: &Progress,
) -> Result<ExportOutcome, ExportError> {
    let stdout = std::io::stdout();
    let mut sink = Sink::new(stdout.lock(), opts.format, opts.shape, 0);
    let mut stream = client.raw(query);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let stdout_path = Path::new("<stdout>");
    let mut header_due = opts.format == Format::Csv;
    loop {
        let next = tokio::select! {
            r = stream.next_batch() => r.map(|b| b.is_some()),
            _ = &mut ctrl_c => {
                return Err(ExportError::Interrupted { rows: stream.summary().row_count });
            }
        };
        match next {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(e.into()),
        }
        let opened = stream.batch().opened();
        match sink.write_batch(&stream, header_due && opened) {
            Ok(()) => {}
            Err(WriteError::Io(e)) => return Err(io(stdout_path)(e)),
            Err(WriteError::Data(e)) => return Err(Error::Verification(e).into()),
        }
        if opened {
            header_due = false;
        }
        progress.update(stream.summary(), sink.bytes);
    }
    let summary = stream.summary().clone();
    let outcome = ExportOutcome {
        rows: summary.row_count,
        bytes: sink.bytes,
        prefix_hash: summary.prefix_hash,
        resumes: summary.resumes,
        continued_from: None,
        restarted: false,
    };
    progress.done(&outcome, "stdout", opts.quiet);
    Ok(outcome)
}

/// Progress on stderr (a terminal only), then one summary line.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new(visible: bool) -> Progress {
        let bar = visible.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(8),
            );
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    fn update(&self, summary: &super::Summary, bytes: u64) {
        let Some(bar) = &self.bar else { return };
        if let (Some(total), None) = (summary.total_rows, bar.length()) {
            bar.set_length(total.max(summary.row_count));
            bar.set_style(bar_style(summary.total_rows_exact));
        }
        bar.set_position(summary.row_count);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{}, {}/s",
            indicatif::HumanBytes(bytes),
            indicatif::HumanBytes((bytes as f64 / secs) as u64)
        ));
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("rowstream: {text}")),
            None => eprintln!("rowstream: {text}"),
        }
    }

    fn done(&self, o: &ExportOutcome, to: &str, quiet: bool) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if quiet {
            return;
        }
        let from = o
            .continued_from
            .map(|r| format!(", continued from row {r}"))
            .unwrap_or_default();
        eprintln!(
            "rowstream: {} rows, {} bytes to {to} in {:.1} s, verified (sha256 {}){from}{}",
            o.rows,
            o.bytes,
            self.started.elapsed().as_secs_f64(),
            o.prefix_hash,
            if o.resumes > 0 {
                format!(", {} resume requests", o.resumes)
            } else {
                String::new()
            }
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} {human_pos} rows, {msg}, {per_sec} [{elapsed}]",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

fn bar_style(exact: bool) -> indicatif::ProgressStyle {
    let t = if exact {
        "{wide_bar} {percent}% {human_pos}/{human_len} rows, {msg}, ETA {eta}"
    } else {
        "{wide_bar} ~{percent}% {human_pos}/~{human_len} rows (estimated), {msg}, ETA {eta}"
    };
    indicatif::ProgressStyle::with_template(t)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_sit_beside_the_output() {
        let p = Path::new("/tmp/out.csv");
        assert_eq!(partial_path(p), Path::new("/tmp/out.csv.partial"));
        assert_eq!(state_path(p), Path::new("/tmp/out.csv.partial.state"));
        assert_eq!(hex_bytes("0aff"), Some(vec![10, 255]));
        assert_eq!(hex_bytes("0ag0"), None);
    }
}
