//! SQLite tenants: a database file in WAL mode, read through read-only
//! connections whose statement gate is SQLite's own authorizer
//! ([`sql`]), with snapshots pinned by an open read transaction.
//!
//! A SQLite snapshot lives in one process: a cursor's read transaction is
//! held by the connection that pinned it, so its resumes run on that
//! connection and nowhere else ([`ReadBackend::import`] answers
//! `snapshot_unavailable`).

pub mod sql;
mod text;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use self::sql::{
    bind_params, columns_of, read_runtime_config, ConnectionInit, ReadConn, RowWriter,
};
use super::{
    as_subquery, Outcome, Params, Prepared, ReadBackend, ResumeKey, ResumePlan, RowSource,
    RowsBody, Run, Session, Snapshot, UNKNOWN_TOTAL,
};
use crate::core::protocol::{CountMode, ErrorBody, ErrorCode, RowTotal};
use crate::core::resumable::{assess_resumability_with, Dialect};
use crate::server::limits::{self, QueryLimits, StepDeadline};
use crate::server::pipe::StreamCtl;
use crate::server::rewrite::RowidPlan;
use crate::server::{lock, ServerError};

/// Idle read connections kept per tenant.
const POOL_SIZE: usize = 8;

/// One tenant: a database file, a writer-less keeper connection that keeps the
/// WAL files alive and observes commits, and a pool of read connections.
pub(crate) struct SqliteTenant {
    pub(crate) path: PathBuf,
    keeper: Mutex<Connection>,
    /// `(last data_version seen by the keeper, snapshot_lsn)`.
    lsn: Mutex<(i64, u64)>,
    pool: Mutex<Vec<ReadConn>>,
    pub(crate) init: Option<ConnectionInit>,
    limits: QueryLimits,
}

impl SqliteTenant {
    pub(crate) fn open(
        path: &Path,
        init: Option<ConnectionInit>,
        limits: QueryLimits,
    ) -> Result<SqliteTenant, ServerError> {
        let db_err = |source| ServerError::Database {
            path: path.to_owned(),
            source,
        };
        let keeper = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        keeper
            .busy_timeout(Duration::from_secs(5))
            .map_err(db_err)?;
        let mode: String = keeper
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ServerError::NotWal(path.to_owned()));
        }
        let dv: i64 = keeper
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db_err)?;
        Ok(SqliteTenant {
            path: path.to_owned(),
            limits,
            keeper: Mutex::new(keeper),
            lsn: Mutex::new((dv, 1)),
            pool: Mutex::new(Vec::new()),
            init,
        })
    }

    /// A read connection from the pool (or a new one).
    pub(crate) fn checkout(&self) -> rusqlite::Result<ReadConn> {
        if let Some(c) = lock(&self.pool).pop() {
            return Ok(c);
        }
        ReadConn::open(&self.path, self.init.as_ref())
    }

    /// Returns a connection to the pool (only when no transaction is open).
    pub(crate) fn checkin(&self, rc: ReadConn) {
        if !rc.conn.is_autocommit() && rc.conn.execute_batch("ROLLBACK").is_err() {
            return;
        }
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_SIZE {
            pool.push(rc);
        }
    }

    pub(crate) fn data_version(&self) -> rusqlite::Result<i64> {
        lock(&self.keeper).query_row("PRAGMA data_version", [], |r| r.get(0))
    }

    pub(crate) fn lsn_for(&self, dv: i64) -> u64 {
        let mut l = lock(&self.lsn);
        if l.0 != dv {
            l.0 = dv;
            l.1 += 1;
        }
        l.1
    }

    /// Opens a read transaction on `rc` and returns its `snapshot_lsn`.
    ///
    /// The keeper's `data_version` is read before and after the pin; when it
    /// did not move, the pinned snapshot is exactly the version the keeper
    /// observed, and `snapshot_lsn` counts the distinct committed versions the
    /// server has observed for this tenant (equal numbers ⇔ same data).
    pub(crate) fn pin(&self, rc: &ReadConn) -> rusqlite::Result<u64> {
        let mut last = 0;
        for _ in 0..4 {
            let before = self.data_version()?;
            rc.conn.execute_batch("BEGIN")?;
            rc.conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })?;
            let after = self.data_version()?;
            if before == after {
                return Ok(self.lsn_for(after));
            }
            last = after;
            rc.conn.execute_batch("ROLLBACK")?;
        }
        rc.conn.execute_batch("BEGIN")?;
        rc.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
        Ok(self.lsn_for(last))
    }
}

/// Ties a running statement to a [`StreamCtl`]: a stop calls
/// `sqlite3_interrupt`, and a progress handler (every 1000 VM steps) checks
/// the stop flag too. The handler closes the gap `sqlite3_interrupt` leaves
/// (an interrupt that lands while no statement is running is forgotten when
/// the next one starts). Dropping the guard removes both, so a late stop can
/// never touch what runs next on the (pooled) connection.
pub struct StatementWatch<'c> {
    ctl: Arc<StreamCtl>,
    conn: &'c rusqlite::Connection,
}

impl<'c> StatementWatch<'c> {
    /// Starts watching `conn` for `ctl`.
    pub fn new(ctl: &Arc<StreamCtl>, conn: &'c rusqlite::Connection) -> Self {
        let stop = ctl.clone();
        conn.progress_handler(
            1000,
            Some(move || stop.is_stopped() || crate::server::limits::step_deadline_passed()),
        );
        let interrupt = conn.get_interrupt_handle();
        ctl.set_interrupt(move || interrupt.interrupt());
        StatementWatch {
            ctl: ctl.clone(),
            conn,
        }
    }
}

impl Drop for StatementWatch<'_> {
    fn drop(&mut self) {
        self.ctl.clear_interrupt();
        self.conn.progress_handler(0, None::<fn() -> bool>);
    }
}

impl ResumePlan for RowidPlan {
    fn seeks(&self) -> bool {
        RowidPlan::seeks(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A SQLite tenant as the orchestration sees it.
#[derive(Clone)]
pub(crate) struct SqliteBackend(pub(crate) Arc<SqliteTenant>);

impl ReadBackend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn session(&self) -> Result<Box<dyn Session>, ErrorBody> {
        let rc = self.0.checkout().map_err(internal)?;
        limits::apply(&rc.conn, &self.0.limits);
        Ok(Box::new(SqliteSession {
            tenant: self.0.clone(),
            rc,
        }))
    }

    fn checkin(&self, session: Box<dyn Session>) {
        if let Ok(s) = session.into_any().downcast::<SqliteSession>() {
            self.0.checkin(s.rc);
        }
    }

    fn import(&self, _snapshot: &Snapshot) -> Result<Box<dyn Session>, ErrorBody> {
        Err(ErrorBody::new(
            ErrorCode::SnapshotUnavailable,
            "the cursor's snapshot is held by the server instance that opened it \
             (SQLite snapshots live in one process): start the query again, or \
             resume on that instance",
        ))
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::InternalError, format!("database failure: {e}"))
}

/// One pooled read connection.
pub(crate) struct SqliteSession {
    tenant: Arc<SqliteTenant>,
    rc: ReadConn,
}

impl SqliteSession {
    /// The tenant's table columns (for the rowid rewrite).
    fn table_columns(&self, table: &str) -> Option<Vec<String>> {
        let mut stmt = self
            .rc
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .ok()?;
        let names = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .ok()?
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        (!names.is_empty()).then_some(names)
    }
}

fn integer_primary_key(rc: &ReadConn, table: &str) -> Option<String> {
    let mut stmt = rc
        .conn
        .prepare("SELECT name, type, pk FROM pragma_table_info(?1)")
        .ok()?;
    let cols: Vec<(String, String, i64)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    let pks: Vec<_> = cols.iter().filter(|c| c.2 > 0).collect();
    match pks.as_slice() {
        [one] if one.1.eq_ignore_ascii_case("integer") => Some(one.0.clone()),
        _ => None,
    }
}

impl Session for SqliteSession {
    fn runtime_config(&mut self) -> BTreeMap<String, String> {
        read_runtime_config(&self.rc.conn)
    }

    fn prepare(&mut self, query: &str, params: Option<&Params>) -> Result<Prepared, ErrorBody> {
        let columns = {
            let mut stmt = self.rc.prepare_checked(query)?;
            bind_params(&mut stmt, params)?;
            columns_of(&stmt, stmt.column_count())
        };
        let resumability = assess_resumability_with(query, &|t| integer_primary_key(&self.rc, t));
        let plan = if resumability.resumable {
            resumability
                .table
                .as_deref()
                .and_then(|t| self.table_columns(t))
                .and_then(|cols| RowidPlan::new(query, &cols))
                .filter(|p| {
                    self.rc
                        .prepare_checked(&p.sql(Some(0)))
                        .map(|s| s.column_count() == columns.len() + 1)
                        .unwrap_or(false)
                })
        } else {
            None
        };
        Ok(Prepared {
            columns,
            resumability,
            plan: plan.map(|p| Arc::new(p) as Arc<dyn ResumePlan>),
        })
    }

    fn pin(&mut self) -> Result<Snapshot, ErrorBody> {
        let lsn = self.tenant.pin(&self.rc).map_err(internal)?;
        Ok(Snapshot {
            lsn,
            reference: None,
        })
    }

    fn execute(
        &mut self,
        run: &Run<'_>,
        ctl: &Arc<StreamCtl>,
        body: &mut RowsBody<'_>,
    ) -> Result<Outcome, ErrorBody> {
        let plan = run
            .plan
            .and_then(|p| p.as_any().downcast_ref::<RowidPlan>());
        let sql = match (plan, run.after) {
            (Some(p), Some(ResumeKey::Rowid(id))) if p.seeks() => p.sql(Some(*id)),
            (Some(p), _) => p.sql(None),
            (None, _) => run.query.to_owned(),
        };
        let mut stmt = self.rc.prepare_checked(&sql)?;
        bind_params(&mut stmt, run.params)?;
        // Declared before `rows`, so it is dropped after the statement is reset.
        let _watch = StatementWatch::new(ctl, &self.rc.conn);
        let _deadline = StepDeadline::arm(&self.tenant.limits);
        let mut rows = SqliteRows {
            rows: stmt.raw_query(),
            writer: RowWriter::new(run.columns, run.shape),
            hidden_rowid: plan.is_some(),
        };
        Ok(body(&mut rows))
    }

    fn total(
        &mut self,
        run: &Run<'_>,
        mode: CountMode,
        ctl: &Arc<StreamCtl>,
    ) -> Result<RowTotal, ErrorBody> {
        // SQLite's planner keeps no row estimates worth a progress bar
        // (sqlite_stat1 only exists after ANALYZE, and says nothing of a
        // WHERE clause): an estimate is honestly unknown.
        if mode != CountMode::Exact {
            return Ok(UNKNOWN_TOTAL);
        }
        let sql = format!(
            "SELECT count(*) FROM {}",
            as_subquery(run.query, Dialect::Sqlite)
        );
        let Ok(mut stmt) = self.rc.prepare_checked(&sql) else {
            return Ok(UNKNOWN_TOTAL);
        };
        bind_params(&mut stmt, run.params)?;
        let _watch = StatementWatch::new(ctl, &self.rc.conn);
        let _deadline = StepDeadline::arm(&self.tenant.limits);
        let mut rows = stmt.raw_query();
        match rows.next() {
            Ok(Some(row)) => Ok(RowTotal {
                total_rows: row.get::<_, i64>(0).ok().map(|n| n.max(0) as u64),
                total_rows_exact: true,
            }),
            Ok(None) => Ok(UNKNOWN_TOTAL),
            Err(e) => Err(limits::step_error(&e)),
        }
    }

    fn holds_snapshot(&self) -> bool {
        !self.rc.conn.is_autocommit()
    }

    fn idle(&mut self) {
        let _ = self.rc.conn.release_memory();
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// The rows of a running SQLite statement.
struct SqliteRows<'s> {
    rows: rusqlite::Rows<'s>,
    writer: RowWriter,
    /// The statement carries the rowid plan's hidden last column.
    hidden_rowid: bool,
}

impl RowSource for SqliteRows<'_> {
    #[inline]
    fn advance(&mut self) -> Result<bool, ErrorBody> {
        match self.rows.advance() {
            Ok(()) => {
                let more = self.rows.get().is_some();
                if more {
                    limits::row_produced();
                }
                Ok(more)
            }
            Err(e) => Err(limits::step_error(&e)),
        }
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        if let Some(row) = self.rows.get() {
            self.writer.write(row, out);
        }
    }

    fn key(&self) -> Option<ResumeKey> {
        if !self.hidden_rowid {
            return None;
        }
        match self.rows.get()?.get_ref(self.writer.width()) {
            Ok(ValueRef::Integer(i)) => Some(ResumeKey::Rowid(i)),
            _ => None,
        }
    }
}
