//! The databases a tenant can live in, behind the one interface that the
//! stream orchestration ([`stream`](super::stream)) is written against.
//!
//! A backend gives the orchestration three things and nothing else:
//!
//! - a [`Session`]: a read connection that gates a client's query
//!   ([`Session::prepare`]), pins a snapshot ([`Session::pin`]) and runs a
//!   statement in it ([`Session::execute`]), handing rows over one at a time
//!   through a [`RowSource`] that writes each row's JSON value straight into
//!   the row line;
//! - a [`ResumePlan`] for resumable queries: the statement that restarts
//!   right after a row's [`ResumeKey`] instead of re-reading the prefix;
//! - [`ReadBackend::import`]: a session reading a snapshot that another
//!   session (possibly another server instance) pinned.
//!
//! Leases, cursors, capacity, checkpoints, the chunk producer, the digest and
//! the encoding hand-off are the orchestration's, written once for every
//! backend. SQLite lives in [`sqlite`], PostgreSQL in [`postgres`].

pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pipe::{StopCause, StreamCtl};
use crate::core::protocol::{Column, CountMode, ErrorBody, RowTotal};
use crate::core::resumable::{tokenize_in, Dialect, Resumability, TokenKind};

/// Query parameters as sent: positional or named.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Params {
    /// `[1, "a"]`
    Positional(Vec<serde_json::Value>),
    /// `{"id": 1}` (names with or without their `:`/`@`/`$` prefix).
    Named(serde_json::Map<String, serde_json::Value>),
}

/// Row shape on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `{"id":1,"name":"a"}`
    #[default]
    Object,
    /// `[1,"a"]`
    Array,
}

/// Where a seek restarts: the key of the last row a checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResumeKey {
    /// A SQLite rowid.
    Rowid(i64),
    /// Primary-key values in their binary wire format, bound back unchanged
    /// (so a key of any type round-trips exactly).
    Values(Vec<Vec<u8>>),
}

/// How a statement ended, as far as the orchestration cares.
pub(crate) enum Outcome {
    /// Every row was produced.
    Done,
    /// Stopped from outside (cancel, disconnect, TTL, shutdown...).
    Stopped(StopCause),
    /// The statement failed after rows may have been sent.
    Failed(ErrorBody),
}

/// The rows of one running statement. Not `Send`: it is stepped on the
/// thread that runs the statement.
pub(crate) trait RowSource {
    /// Steps to the next row: `Ok(false)` at the end. Errors are the
    /// protocol's (`query_error`, `resource_limit_exceeded`...).
    fn advance(&mut self) -> Result<bool, ErrorBody>;
    /// Writes the current row's value (object or array) to `out`.
    fn write(&self, out: &mut Vec<u8>);
    /// The current row's resume key, when the statement carries one.
    fn key(&self) -> Option<ResumeKey>;
}

/// The statement a resumable query is run as, fresh or after a key.
pub(crate) trait ResumePlan: Send + Sync {
    /// Whether [`Run::after`] is honoured by seeking (otherwise a resume
    /// skips rows from the start).
    fn seeks(&self) -> bool;
    /// For the backend that made it (each downcasts to its own plan).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What the gate learned about a client's query (nothing was executed).
pub(crate) struct Prepared {
    /// Result columns, as the protocol's `open.columns`.
    pub(crate) columns: Vec<Column>,
    /// The classifier's verdict (and the reason code when not resumable).
    pub(crate) resumability: Resumability,
    /// How resumes find their place; `None` when the query runs unchanged.
    pub(crate) plan: Option<Arc<dyn ResumePlan>>,
}

/// A pinned snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// `open.snapshot_lsn`: equal numbers mean the same data.
    pub lsn: u64,
    /// What another session needs to read the same snapshot (PostgreSQL:
    /// the exported snapshot's name); `None` when only the pinning session
    /// can (SQLite).
    pub reference: Option<String>,
}

/// One statement to run.
pub(crate) struct Run<'a> {
    /// The client's query.
    pub(crate) query: &'a str,
    /// Its parameters.
    pub(crate) params: Option<&'a Params>,
    /// The columns [`Session::prepare`] reported.
    pub(crate) columns: &'a [Column],
    /// Row shape.
    pub(crate) shape: Shape,
    /// The resume plan from [`Prepared::plan`], if any.
    pub(crate) plan: Option<&'a Arc<dyn ResumePlan>>,
    /// With a seeking plan: restart after this key.
    pub(crate) after: Option<&'a ResumeKey>,
    /// Rows the caller reads (to verify a resume's prefix) before the first
    /// one it sends: no client waits for them, so they may come in one batch.
    pub(crate) replay: u64,
}

/// Runs `body` over the rows of a statement.
pub(crate) type RowsBody<'a> = dyn FnMut(&mut dyn RowSource) -> Outcome + 'a;

/// A read connection of one tenant.
pub(crate) trait Session: Send {
    /// The tenant's runtime `stream.*` settings (`rowstream_config`).
    fn runtime_config(&mut self) -> BTreeMap<String, String>;
    /// Gates the client's query: refuses anything but one read-only query
    /// (`stream_unsupported_statement`), reports `query_error`s, binds
    /// nothing yet. Executes nothing the client wrote.
    fn prepare(&mut self, query: &str, params: Option<&Params>) -> Result<Prepared, ErrorBody>;
    /// Opens the read transaction that every statement of this session
    /// reads from until the session is dropped.
    fn pin(&mut self) -> Result<Snapshot, ErrorBody>;
    /// Runs `run` in the pinned snapshot. `body` is called once, when rows
    /// can be read: a backend that can only tell whether a statement is
    /// allowed by running it (PostgreSQL's read-only transaction) fetches
    /// the first rows before, so a refusal comes back as `Err` before the
    /// client saw anything. A stop of `ctl` interrupts the statement.
    fn execute(
        &mut self,
        run: &Run<'_>,
        ctl: &Arc<StreamCtl>,
        body: &mut RowsBody<'_>,
    ) -> Result<Outcome, ErrorBody>;
    /// (1.1) The size of `run`'s result for a request's `count`, in the
    /// pinned snapshot, before the first row: `Exact` counts it (a scan),
    /// `Estimated` asks the planner where the backend has one. A count the
    /// backend cannot make is `total_rows: None`; a stop of `ctl`
    /// interrupts it.
    fn total(
        &mut self,
        run: &Run<'_>,
        mode: CountMode,
        ctl: &Arc<StreamCtl>,
    ) -> Result<RowTotal, ErrorBody>;
    /// Whether the pinned snapshot is still held (false: the session cannot
    /// serve resumes any more).
    fn holds_snapshot(&self) -> bool;
    /// The session goes idle (until a resume): give memory back.
    fn idle(&mut self) {}
    /// For [`ReadBackend::checkin`], which takes back its own kind.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// One tenant's database.
pub(crate) trait ReadBackend: Send + Sync {
    /// `sqlite` or `postgres` (logs, metrics, readiness).
    #[allow(dead_code)]
    fn kind(&self) -> &'static str;
    /// A read session (pooled).
    fn session(&self) -> Result<Box<dyn Session>, ErrorBody>;
    /// Returns an unpinned or finished session to the pool.
    fn checkin(&self, session: Box<dyn Session>);
    /// A session reading `snapshot`, pinned by a session that may live in
    /// another instance; `snapshot_unavailable` when it is gone.
    fn import(&self, snapshot: &Snapshot) -> Result<Box<dyn Session>, ErrorBody>;
}

/// The total a backend cannot tell.
pub(crate) const UNKNOWN_TOTAL: RowTotal = RowTotal {
    total_rows: None,
    total_rows_exact: false,
};

/// `query` (one statement, as the database already accepted it) as the body
/// of a subquery: cut at its first `;` (what follows can only be comments or
/// empty statements), the closing parenthesis on a line of its own (a
/// trailing `--` comment stays a comment).
pub(crate) fn as_subquery(query: &str, dialect: Dialect) -> String {
    let end = tokenize_in(query, dialect)
        .ok()
        .and_then(|tokens| {
            tokens
                .iter()
                .find(|t| t.kind == TokenKind::Semicolon)
                .map(|t| t.offset)
        })
        .unwrap_or(query.len());
    let mut q = query[..end].trim_end();
    while let Some(rest) = q.strip_suffix(';') {
        q = rest.trim_end();
    }
    format!("(\n{q}\n)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subquery_ends_at_the_statement_and_keeps_trailing_comments_commented() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            assert_eq!(as_subquery("SELECT 1; -- done", dialect), "(\nSELECT 1\n)");
            assert_eq!(
                as_subquery("SELECT ';' AS x ;;", dialect),
                "(\nSELECT ';' AS x\n)"
            );
            assert_eq!(
                as_subquery("SELECT 1 -- done", dialect),
                "(\nSELECT 1 -- done\n)"
            );
        }
        assert_eq!(
            as_subquery("SELECT $$;$$ AS x; /* c */", Dialect::Postgres),
            "(\nSELECT $$;$$ AS x\n)"
        );
    }
}
