//! PostgreSQL tenants, through `tokio-postgres`.
//!
//! **Read-only, decided by PostgreSQL.** Every stream runs in
//! `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`; the client's text is
//! one statement of the extended protocol (a second statement is refused by
//! PostgreSQL's parser), run inside a savepoint: in keyset batches when it
//! is resumable, else as `DECLARE … NO SCROLL CURSOR FOR <query>` read with
//! `FETCH`. In front of that, rowstream
//! refuses what a read-only transaction still allows but which changes the
//! session or the server (see [`gate`]). After a stream the session is rolled
//! back and `DISCARD ALL`ed before it is pooled again.
//!
//! **Snapshots.** The pinning transaction exports its snapshot
//! (`pg_export_snapshot()`) and stays open, idle, for the TTL; a resume on
//! another session — of this instance or another one — imports it with
//! `SET TRANSACTION SNAPSHOT`. When the pinning session is gone, the import
//! fails and the resume is answered `snapshot_unavailable`.
//!
//! **Rows** arrive in batches (`… WHERE key > $last LIMIT $n`, or `FETCH`)
//! whose size adapts to the query's pace
//! (1 row first, growing while batches come back fast, shrinking when they
//! are slow), so a row is never held back by PostgreSQL's output buffer for
//! long while the query stalls, and fast queries cost one round trip per
//! several thousand rows; the next batch is fetched while the current one is
//! encoded. Values are decoded from the binary format ([`values`]).

pub(crate) mod gate;
pub(crate) mod ingest;
pub(crate) mod values;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use self::values::ValueWriter;
use super::{
    as_subquery, Outcome, Params, Prepared, ReadBackend, ResumeKey, ResumePlan, RowSource,
    RowsBody, Run, Session, Shape, Snapshot, UNKNOWN_TOTAL,
};
use crate::core::protocol::{Column, CountMode, ErrorBody, ErrorCode, RowTotal};
use crate::core::resumable::{Dialect, NotResumableReason};
use crate::server::lock;
use crate::server::pipe::StreamCtl;
use crate::server::rewrite::KeyPlan;

/// Idle sessions kept per tenant.
const POOL_SIZE: usize = 8;
/// The largest batch.
const MAX_BATCH: usize = 8192;
/// Name of the server-side cursor of a running statement.
const CURSOR: &str = "rowstream_c";

/// Why a PostgreSQL tenant could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PgSetupError {
    /// The URL does not parse.
    #[error("{0}: not a valid PostgreSQL URL: {1}")]
    Url(String, String),
    /// No connection.
    #[error("{0}: cannot connect: {1}")]
    Connect(String, String),
    /// The role may bypass what the read path relies on.
    #[error(
        "{0}: role {1:?} is a superuser or has BYPASSRLS; streaming must run as a SELECT-only \
         role (see SERVER.md), or pass --allow-privileged-role"
    )]
    Privileged(String, String),
}

/// A URL with its password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether a `--db`/`--tenant` value names a PostgreSQL database.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Parses `url` (libpq URL syntax); a missing password comes from
/// `PGPASSWORD`, then `~/.pgpass`.
pub fn parse_config(url: &str) -> Result<Config, PgSetupError> {
    let mut config: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgSetupError::Url(redact_url(url), e.to_string()))?;
    if config.get_password().is_none() {
        if let Ok(p) = std::env::var("PGPASSWORD") {
            config.password(p);
        } else if let Some(p) = pgpass_password(&config) {
            config.password(p);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("rowstream");
    }
    Ok(config)
}

/// The `~/.pgpass` (or `PGPASSFILE`) entry for `config`, if any.
fn pgpass_password(config: &Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_owned();
    let db = config.get_dbname().unwrap_or(&user).to_owned();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let ok = |f: &str, v: &str| f == "*" || f == v;
        if ok(&fields[0], &host)
            && ok(&fields[1], &port)
            && ok(&fields[2], &db)
            && ok(&fields[3], &user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

/// `a:b\:c:d` → `["a", "b:c", "d"]` (`\` escapes `:` and `\`).
fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(s) = out.last_mut() {
                        s.push(n);
                    }
                }
            }
            ':' => out.push(String::new()),
            _ => {
                if let Some(s) = out.last_mut() {
                    s.push(c);
                }
            }
        }
    }
    out
}

/// One PostgreSQL tenant: where it lives and a pool of read sessions.
pub(crate) struct PgTenant {
    config: Config,
    /// The URL without its password.
    pub(crate) display: String,
    pool: Mutex<Vec<PgConn>>,
    /// `format_type` of type OIDs seen so far.
    type_names: Mutex<HashMap<u32, String>>,
    max_step_ms: u64,
    /// The writer role's connection settings (`--tenant-writer`), for
    /// uploads only.
    pub(crate) writer: Option<Config>,
}

impl std::fmt::Debug for PgTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenant")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

/// A connection and the task driving it.
struct PgConn {
    client: Arc<Client>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Dropping the client ends the session; the task ends with it.
        self.task.abort();
    }
}

fn db_error(e: &tokio_postgres::Error) -> ErrorBody {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code();
            let text = match db.detail() {
                Some(d) => format!("{} ({d})", db.message()),
                None => db.message().to_owned(),
            };
            if *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::INSUFFICIENT_PRIVILEGE
                || *code == SqlState::INVALID_CURSOR_DEFINITION
                || *code == SqlState::FEATURE_NOT_SUPPORTED
            {
                ErrorBody::new(
                    ErrorCode::StreamUnsupportedStatement,
                    format!("only a single read-only query can be streamed: {text}"),
                )
                .with("sqlstate", code.code())
            } else if *code == SqlState::QUERY_CANCELED
                || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
                || *code == SqlState::OUT_OF_MEMORY
            {
                ErrorBody::new(ErrorCode::ResourceLimitExceeded, text).with("sqlstate", code.code())
            } else {
                ErrorBody::new(ErrorCode::QueryError, text).with("sqlstate", code.code())
            }
        }
        None => ErrorBody::new(ErrorCode::InternalError, format!("database failure: {e}")),
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::InternalError, format!("database failure: {e}"))
}

impl PgTenant {
    /// Checks the URL and the role (on its own thread and runtime, so it
    /// works inside and outside a runtime).
    pub(crate) fn open(
        url: &str,
        writer: Option<&str>,
        allow_privileged: bool,
        max_step_ms: u64,
    ) -> Result<PgTenant, PgSetupError> {
        let config = parse_config(url)?;
        let writer = writer.map(parse_config).transpose()?;
        let display = redact_url(url);
        let check = {
            let config = config.clone();
            let display = display.clone();
            std::thread::spawn(move || -> Result<(), PgSetupError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| PgSetupError::Connect(display.clone(), e.to_string()))?;
                rt.block_on(async {
                    let connect_err = |e: tokio_postgres::Error| {
                        PgSetupError::Connect(display.clone(), e.to_string())
                    };
                    let (client, conn) = config.connect(NoTls).await.map_err(connect_err)?;
                    let task = tokio::spawn(conn);
                    let row = client
                        .query_one(
                            "SELECT current_user::text, rolsuper, rolbypassrls \
                             FROM pg_roles WHERE rolname = current_user",
                            &[],
                        )
                        .await
                        .map_err(connect_err)?;
                    drop(client);
                    let _ = task.await;
                    let (user, su, bypass): (String, bool, bool) =
                        (row.get(0), row.get(1), row.get(2));
                    if (su || bypass) && !allow_privileged {
                        return Err(PgSetupError::Privileged(display.clone(), user));
                    }
                    Ok(())
                })
            })
        };
        check
            .join()
            .map_err(|_| PgSetupError::Connect(display.clone(), "check panicked".into()))??;
        Ok(PgTenant {
            config,
            display,
            pool: Mutex::new(Vec::new()),
            type_names: Mutex::new(HashMap::new()),
            max_step_ms,
            writer,
        })
    }

    /// A new connection, driven on the current runtime.
    fn connect(&self, rt: &Handle) -> Result<PgConn, ErrorBody> {
        let config = self.config.clone();
        let (client, conn) = rt
            .block_on(async move {
                tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls)).await
            })
            .map_err(|_| internal("connecting to PostgreSQL timed out"))?
            .map_err(internal)?;
        let task = rt.spawn(async move {
            let _ = conn.await;
        });
        Ok(PgConn {
            client: Arc::new(client),
            task,
        })
    }
}

impl PgTenant {
    /// Checks the database answers (readiness).
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let (client, conn) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let r = client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string());
        drop(client);
        let _ = task.await;
        r.map(|_| ())
    }

    /// Whether uploads have a writer role.
    pub(crate) fn accepts_ingest(&self) -> bool {
        self.writer.is_some()
    }
}

/// The `rowstream_config` table of a tenant database (missing: empty).
pub(crate) async fn read_runtime_config(
    client: &Client,
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let exists = client
        .query_one("SELECT to_regclass('rowstream_config') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query("SELECT key::text, value::text FROM rowstream_config", &[])
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
        .collect())
}

/// A PostgreSQL tenant as the orchestration sees it.
#[derive(Clone)]
pub(crate) struct PgBackend(pub(crate) Arc<PgTenant>);

impl PgBackend {
    fn new_session(&self) -> Result<PgSession, ErrorBody> {
        let rt = Handle::try_current().map_err(internal)?;
        let pooled = loop {
            match lock(&self.0.pool).pop() {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match pooled {
            Some(c) => c,
            None => self.0.connect(&rt)?,
        };
        Ok(PgSession {
            tenant: self.0.clone(),
            conn,
            rt,
            in_tx: false,
            snapshot_ok: false,
            broken: false,
            cursor_open: false,
        })
    }
}

impl ReadBackend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn session(&self) -> Result<Box<dyn Session>, ErrorBody> {
        Ok(Box::new(self.new_session()?))
    }

    fn checkin(&self, session: Box<dyn Session>) {
        let Ok(mut s) = session.into_any().downcast::<PgSession>() else {
            return;
        };
        if s.broken || s.conn.client.is_closed() {
            return;
        }
        // Back to a clean session: no transaction, no settings, locks,
        // listeners, prepared statements or temporary tables left.
        let reset = if s.in_tx {
            "ROLLBACK; DISCARD ALL"
        } else {
            "DISCARD ALL"
        };
        if s.batch(reset).is_err() {
            return;
        }
        s.in_tx = false;
        let mut pool = lock(&self.0.pool);
        if pool.len() < POOL_SIZE {
            let PgSession { conn, .. } = *s;
            pool.push(conn);
        }
    }

    fn import(&self, snapshot: &Snapshot) -> Result<Box<dyn Session>, ErrorBody> {
        let unavailable = || {
            ErrorBody::new(
                ErrorCode::SnapshotUnavailable,
                "the cursor's snapshot is no longer available (the server instance holding it \
                 stopped): start the query again",
            )
        };
        let Some(id) = snapshot.reference.as_deref() else {
            return Err(unavailable());
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(unavailable());
        }
        let mut s = self.new_session()?;
        s.begin()?;
        if s.batch(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
            .is_err()
        {
            self.checkin(Box::new(s));
            return Err(unavailable());
        }
        s.limits()?;
        s.snapshot_ok = true;
        Ok(Box::new(s))
    }
}

/// One read session.
pub(crate) struct PgSession {
    tenant: Arc<PgTenant>,
    conn: PgConn,
    rt: Handle,
    /// A transaction is open (pinned or imported).
    in_tx: bool,
    /// The snapshot is still held (the transaction has not failed).
    snapshot_ok: bool,
    /// The connection is unusable (not pooled again).
    broken: bool,
    /// The running statement's cursor is declared (closed after it).
    cursor_open: bool,
}

impl PgSession {
    fn batch(&mut self, sql: &str) -> Result<(), ErrorBody> {
        let client = self.conn.client.clone();
        let sql = sql.to_owned();
        let r = self
            .rt
            .block_on(async move { client.batch_execute(&sql).await });
        r.map_err(|e| {
            if e.as_db_error().is_none() {
                self.broken = true;
            }
            db_error(&e)
        })
    }

    fn begin(&mut self) -> Result<(), ErrorBody> {
        // The tokenizer (and so the gate and the key rewrite) reads strings
        // the standard way: make PostgreSQL read them the same way.
        self.batch(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL standard_conforming_strings = on",
        )?;
        self.in_tx = true;
        Ok(())
    }

    /// Per-transaction limits: a statement (one batch) may run at most
    /// `max_step_ms` without delivering its rows.
    fn limits(&mut self) -> Result<(), ErrorBody> {
        let ms = self.tenant.max_step_ms;
        self.batch(&format!("SET LOCAL statement_timeout = {ms}"))
    }

    fn type_name(&self, ty: &Type) -> String {
        if let Some(n) = lock(&self.tenant.type_names).get(&ty.oid()) {
            return n.clone();
        }
        let client = self.conn.client.clone();
        let oid = ty.oid();
        let name = self
            .rt
            .block_on(async move {
                client
                    .query_one("SELECT format_type($1::oid, NULL)", &[&oid])
                    .await
            })
            .ok()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_else(|| ty.name().to_owned());
        lock(&self.tenant.type_names).insert(oid, name.clone());
        name
    }

    /// The table's primary-key columns, in key order.
    fn primary_key(&self, schema: Option<&str>, table: &str) -> Option<Vec<String>> {
        let client = self.conn.client.clone();
        let qualified = match schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(table)),
            None => quote_ident(table),
        };
        self.rt
            .block_on(async move {
                client
                    .query(
                        "SELECT a.attname::text FROM pg_index i \
                         JOIN pg_attribute a ON a.attrelid = i.indrelid \
                           AND a.attnum = ANY(i.indkey) \
                         WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
                         ORDER BY array_position(i.indkey, a.attnum)",
                        &[&qualified],
                    )
                    .await
            })
            .ok()
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
            .filter(|k| !k.is_empty())
    }
}

/// The key rewrite of a resumable query.
struct PgPlan(KeyPlan);

impl ResumePlan for PgPlan {
    fn seeks(&self) -> bool {
        self.0.seeks()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl PgSession {
    /// Whether the rewritten query prepares with the hidden key columns
    /// after the client's (the rewrite is checked by PostgreSQL itself).
    fn plan_prepares(&self, plan: &KeyPlan, width: usize) -> bool {
        let client = self.conn.client.clone();
        let sql = plan.sql(plan.seeks().then_some(plan.max_param() + 1));
        self.rt
            .block_on(async move { client.prepare(&sql).await })
            .is_ok_and(|s| s.columns().len() == width + plan.key_len())
    }
}

/// `"name"` with inner quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A JSON parameter, sent in text format: PostgreSQL parses it as whatever
/// type the statement gives the placeholder.
#[derive(Debug)]
struct JsonParam<'a>(&'a serde_json::Value);

impl ToSql for JsonParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            serde_json::Value::Null => return Ok(IsNull::Yes),
            serde_json::Value::Bool(b) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" })
            }
            serde_json::Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            serde_json::Value::String(s) => out.extend_from_slice(s.as_bytes()),
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A value in binary wire format, bound back as it came (resume keys).
#[derive(Debug)]
struct RawParam<'a>(&'a [u8]);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A statement's parameters in placeholder order: the client's, then a
/// seek key's, then a row limit.
fn sql_params<'a>(
    args: &'a [JsonParam<'a>],
    keys: &'a [RawParam<'a>],
    limit: Option<&'a i64>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn ToSql + Sync))
        .chain(keys.iter().map(|k| k as &(dyn ToSql + Sync)))
        .chain(limit.map(|l| l as &(dyn ToSql + Sync)))
        .collect()
}

/// Any column's raw bytes (`None` for NULL).
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn raw(row: &Row, i: usize) -> Option<&[u8]> {
    row.try_get::<_, Raw<'_>>(i).ok().and_then(|r| r.0)
}

/// The client's parameters, in placeholder order.
fn bind_values(
    stmt: &Statement,
    params: Option<&Params>,
    extra: usize,
) -> Result<Vec<serde_json::Value>, ErrorBody> {
    let expected = stmt.params().len().saturating_sub(extra);
    let qerr = |m: String| ErrorBody::new(ErrorCode::QueryError, m);
    let values: Vec<serde_json::Value> = match params {
        None => Vec::new(),
        Some(Params::Positional(v)) => v.clone(),
        Some(Params::Named(map)) => {
            // `$1`, `$2`... may be named "1", "2" (or "$1").
            let mut v = vec![serde_json::Value::Null; map.len()];
            for (name, value) in map {
                let n: usize = name
                    .trim_start_matches('$')
                    .parse()
                    .ok()
                    .filter(|n| (1..=map.len()).contains(n))
                    .ok_or_else(|| {
                        qerr(format!(
                            "PostgreSQL parameters are positional: name them \"1\", \"2\"... \
                             (got {name:?})"
                        ))
                    })?;
                v[n - 1] = value.clone();
            }
            v
        }
    };
    if values.len() != expected {
        return Err(qerr(format!(
            "the query expects {expected} parameters, {} were sent",
            values.len()
        )));
    }
    if values.iter().any(|v| v.is_array() || v.is_object()) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "parameters must be null, booleans, numbers or strings",
        ));
    }
    Ok(values)
}

impl Session for PgSession {
    fn runtime_config(&mut self) -> BTreeMap<String, String> {
        let client = self.conn.client.clone();
        self.rt
            .block_on(async move { read_runtime_config(&client).await })
            .unwrap_or_default()
    }

    fn prepare(&mut self, query: &str, params: Option<&Params>) -> Result<Prepared, ErrorBody> {
        gate::check(query)?;
        let client = self.conn.client.clone();
        let q = query.to_owned();
        let stmt = self
            .rt
            .block_on(async move { client.prepare(&q).await })
            .map_err(|e| {
                if e.as_db_error()
                    .is_some_and(|d| d.message().contains("multiple commands"))
                {
                    ErrorBody::new(
                        ErrorCode::StreamUnsupportedStatement,
                        "only a single read-only query can be streamed: several statements were sent",
                    )
                } else {
                    db_error(&e)
                }
            })?;
        if stmt.columns().is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::StreamUnsupportedStatement,
                "only a single read-only query can be streamed: the statement returns no rows",
            ));
        }
        bind_values(&stmt, params, 0)?;
        let columns = stmt
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_owned(),
                decl_type: self.type_name(c.type_()),
            })
            .collect();
        let mut resumability =
            gate::resumability(query, &|schema, table| self.primary_key(schema, table));
        let mut plan = None;
        if resumability.resumable {
            let key = resumability
                .table
                .as_deref()
                .and_then(|t| self.primary_key(resumability.schema.as_deref(), t));
            plan = key
                .and_then(|k| KeyPlan::new(query, &k))
                .filter(|p| self.plan_prepares(p, stmt.columns().len()));
            if plan.is_none() && !resumability.order_by_key {
                // Without the rewrite nothing orders the rows by the key.
                resumability.resumable = false;
                resumability.reason = Some(NotResumableReason::ParseError);
            }
        }
        Ok(Prepared {
            columns,
            resumability,
            plan: plan.map(|p| Arc::new(PgPlan(p)) as Arc<dyn ResumePlan>),
        })
    }

    fn pin(&mut self) -> Result<Snapshot, ErrorBody> {
        self.begin()?;
        self.limits()?;
        let client = self.conn.client.clone();
        let row = self
            .rt
            .block_on(async move {
                client
                    .query_one(
                        "SELECT pg_export_snapshot(), (CASE WHEN pg_is_in_recovery() \
                         THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text",
                        &[],
                    )
                    .await
            })
            .map_err(|e| db_error(&e))?;
        let id: String = row.get(0);
        let lsn: String = row.get(1);
        self.snapshot_ok = true;
        Ok(Snapshot {
            lsn: parse_lsn(&lsn),
            reference: Some(id),
        })
    }

    fn execute(
        &mut self,
        run: &Run<'_>,
        ctl: &Arc<StreamCtl>,
        body: &mut RowsBody<'_>,
    ) -> Result<Outcome, ErrorBody> {
        if !self.in_tx {
            self.begin()?;
            self.limits()?;
        }
        self.batch("SAVEPOINT rowstream_run")?;
        let result = self.run_cursor(run, ctl, body);
        let close = if std::mem::take(&mut self.cursor_open) {
            format!("CLOSE {CURSOR}; ")
        } else {
            String::new()
        };
        let end = if result.is_ok() {
            self.batch(&format!("{close}RELEASE SAVEPOINT rowstream_run"))
        } else {
            Err(internal("failed"))
        };
        if end.is_err()
            && self
                .batch("ROLLBACK TO SAVEPOINT rowstream_run; RELEASE SAVEPOINT rowstream_run")
                .is_err()
        {
            // The transaction (and so the snapshot) is gone.
            self.snapshot_ok = false;
        }
        result
    }

    fn total(
        &mut self,
        run: &Run<'_>,
        mode: CountMode,
        ctl: &Arc<StreamCtl>,
    ) -> Result<RowTotal, ErrorBody> {
        let sql = match mode {
            CountMode::None => return Ok(UNKNOWN_TOTAL),
            CountMode::Exact => {
                format!(
                    "SELECT count(*) FROM {} AS rowstream_count",
                    as_subquery(run.query, Dialect::Postgres)
                )
            }
            CountMode::Estimated => format!("EXPLAIN (FORMAT JSON) {}", run.query),
        };
        if !self.in_tx {
            self.begin()?;
            self.limits()?;
        }
        // In the stream's transaction (its snapshot); a failure must not
        // abort that transaction.
        self.batch("SAVEPOINT rowstream_count")?;
        let client = self.conn.client.clone();
        let prepared = self.rt.block_on(async move { client.prepare(&sql).await });
        let unprepared = prepared.is_err();
        let result = match prepared {
            // A count the server cannot phrase (the query does not nest):
            // no total, the stream itself still runs.
            Err(_) => Ok(UNKNOWN_TOTAL),
            Ok(stmt) => match bind_values(&stmt, run.params, 0) {
                Err(e) => Err(e),
                Ok(values) => {
                    let (cancel, handle) = (self.conn.client.cancel_token(), self.rt.clone());
                    ctl.set_interrupt(move || {
                        let cancel = cancel.clone();
                        handle.spawn(async move {
                            let _ = cancel.cancel_query(NoTls).await;
                        });
                    });
                    let client = self.conn.client.clone();
                    let r = self.rt.block_on(async move {
                        let args: Vec<JsonParam<'_>> = values.iter().map(JsonParam).collect();
                        client.query_one(&stmt, &sql_params(&args, &[], None)).await
                    });
                    ctl.clear_interrupt();
                    match r {
                        Err(e) => Err(db_error(&e)),
                        Ok(row) if mode == CountMode::Exact => Ok(RowTotal {
                            total_rows: row.try_get::<_, i64>(0).ok().map(|n| n.max(0) as u64),
                            total_rows_exact: true,
                        }),
                        Ok(row) => Ok(RowTotal {
                            total_rows: row
                                .try_get::<_, serde_json::Value>(0)
                                .ok()
                                .and_then(|plan| plan[0]["Plan"]["Plan Rows"].as_f64())
                                .filter(|n| n.is_finite() && *n >= 0.0)
                                .map(|n| n.round() as u64),
                            total_rows_exact: false,
                        }),
                    }
                }
            },
        };
        let end = if result.is_ok() && !unprepared {
            "RELEASE SAVEPOINT rowstream_count"
        } else {
            "ROLLBACK TO SAVEPOINT rowstream_count; RELEASE SAVEPOINT rowstream_count"
        };
        let released = self.batch(end);
        match (result, released) {
            (Ok(_), Err(e)) => Err(e),
            (r, _) => r,
        }
    }

    fn holds_snapshot(&self) -> bool {
        self.snapshot_ok && !self.broken && !self.conn.client.is_closed()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// `16/B374D848` → `0x16_B374D848`.
pub(crate) fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap_or(("0", s));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

impl PgSession {
    fn run_cursor(
        &mut self,
        run: &Run<'_>,
        ctl: &Arc<StreamCtl>,
        body: &mut RowsBody<'_>,
    ) -> Result<Outcome, ErrorBody> {
        // Columns of types without a binary decoder are read through their
        // text output: the statement is wrapped to cast them, keeping its
        // row order (a plain subquery scan).
        let plan = run
            .plan
            .and_then(|p| p.as_any().downcast_ref::<PgPlan>())
            .map(|p| &p.0);
        let seek: Vec<Vec<u8>> = match (plan, run.after) {
            (Some(p), Some(ResumeKey::Values(v))) if p.seeks() && v.len() == p.key_len() => {
                v.clone()
            }
            _ => Vec::new(),
        };
        // A key-ordered query is read in keyset batches (each one its own
        // execution, straight from the executor to the socket); anything
        // else through a cursor, whose `FETCH` PostgreSQL materialises into
        // a tuple store per batch before sending it (about 40% more backend
        // CPU per row, see BENCHMARKS.md).
        let keyset = plan.filter(|p| p.seeks());
        let inner = match plan {
            Some(p) => p.sql(keyset.map(|p| p.max_param() + 1)),
            None => run.query.to_owned(),
        };
        let client = self.conn.client.clone();
        let probe_sql = inner.clone();
        let probe = self
            .rt
            .block_on(async move { client.prepare(&probe_sql).await })
            .map_err(|e| db_error(&e))?;
        // Hidden key columns are never cast: they are bound back as they came.
        let text_cols: Vec<bool> = probe
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| i < run.columns.len() && ValueWriter::for_type(c.type_()).is_none())
            .collect();
        let cast = |inner: String| {
            if !text_cols.iter().any(|t| *t) {
                return inner;
            }
            let names: Vec<String> = (0..text_cols.len()).map(|i| format!("c{i}")).collect();
            let exprs: Vec<String> = names
                .iter()
                .zip(&text_cols)
                .map(|(n, t)| if *t { format!("{n}::text") } else { n.clone() })
                .collect();
            format!(
                "SELECT {} FROM {} AS rowstream_q({})",
                exprs.join(", "),
                as_subquery(&inner, Dialect::Postgres),
                names.join(", ")
            )
        };
        let source = match keyset {
            Some(p) => {
                // The row limit is the placeholder after the client's and
                // the key's.
                let limited = |sql: String, limit: usize| {
                    format!(
                        "SELECT * FROM {} AS rowstream_b\nLIMIT ${limit}",
                        as_subquery(&sql, Dialect::Postgres)
                    )
                };
                let prepare = |sql: String| {
                    let client = self.conn.client.clone();
                    self.rt
                        .block_on(async move { client.prepare(&sql).await })
                        .map_err(|e| db_error(&e))
                };
                let next = prepare(limited(cast(inner), p.max_param() + p.key_len() + 1))?;
                // The first batch of a fresh stream has no key to seek past.
                let first = match seek.is_empty() {
                    true => Some(prepare(limited(cast(p.sql(None)), p.max_param() + 1))?),
                    false => None,
                };
                let values = bind_values(&next, run.params, p.key_len() + 1)?;
                Source::Keyset(Keyset {
                    first,
                    next,
                    values,
                    key: (!seek.is_empty()).then_some(seek),
                    key_at: run.columns.len(),
                })
            }
            None => {
                let declare_sql = format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {}", cast(inner));
                let client = self.conn.client.clone();
                let declare = self
                    .rt
                    .block_on(async move { client.prepare(&declare_sql).await })
                    .map_err(|e| db_error(&e))?;
                let values = bind_values(&declare, run.params, 0)?;
                let client = self.conn.client.clone();
                let r = self.rt.block_on(async move {
                    let args: Vec<JsonParam<'_>> = values.iter().map(JsonParam).collect();
                    client
                        .execute(&declare, &sql_params(&args, &[], None))
                        .await
                });
                r.map_err(|e| db_error(&e))?;
                self.cursor_open = true;
                Source::Cursor(HashMap::new())
            }
        };
        let mut fetcher = Fetcher::new(self.conn.client.clone(), self.rt.clone(), ctl, source);
        // A resume's replayed rows and its first row come in one batch.
        fetcher.next = usize::try_from(run.replay.saturating_add(1))
            .unwrap_or(MAX_BATCH)
            .min(MAX_BATCH);
        let mut rows = PgRows::new(fetcher, run.columns, run.shape, self, ctl)?;
        Ok(body(&mut rows))
    }
}

/// A batch on its way.
/// (It reports when its rows had all arrived: a batch fetched ahead may wait
/// a while before it is taken.)
type FetchTask = tokio::task::JoinHandle<(Result<Vec<Row>, tokio_postgres::Error>, Instant)>;

/// Where the batches come from.
enum Source {
    /// `FETCH FORWARD n` from the declared cursor (its statements by `n`).
    Cursor(HashMap<usize, Statement>),
    /// Key-ordered batches: `… WHERE key > $last … LIMIT $n`, each run on
    /// its own in the transaction's snapshot.
    Keyset(Keyset),
}

/// The statements and state of keyset batches.
struct Keyset {
    /// Without the key predicate: the first batch of a fresh stream.
    first: Option<Statement>,
    /// With the key predicate (the key after the client's parameters, the
    /// row limit last).
    next: Statement,
    /// The client's parameters.
    values: Vec<serde_json::Value>,
    /// The key of the last row fetched (binary, as it came).
    key: Option<Vec<Vec<u8>>>,
    /// Index of the first hidden key column.
    key_at: usize,
}

/// Fetches batches of the running statement, one ahead.
struct Fetcher {
    client: Arc<Client>,
    rt: Handle,
    source: Source,
    pending: Option<(usize, Instant, FetchTask)>,
    next: usize,
    done: bool,
    in_flight: Arc<AtomicBool>,
}

impl Fetcher {
    fn new(client: Arc<Client>, rt: Handle, ctl: &Arc<StreamCtl>, source: Source) -> Self {
        let in_flight = Arc::new(AtomicBool::new(false));
        let (flag, cancel, handle) = (in_flight.clone(), client.cancel_token(), rt.clone());
        ctl.set_interrupt(move || {
            if flag.load(Ordering::SeqCst) {
                let cancel = cancel.clone();
                handle.spawn(async move {
                    let _ = cancel.cancel_query(NoTls).await;
                });
            }
        });
        Fetcher {
            client,
            rt,
            source,
            pending: None,
            next: 1,
            done: false,
            in_flight,
        }
    }

    /// Sends the next batch's request (unless the rows are exhausted).
    fn send(&mut self) -> Result<(), ErrorBody> {
        if self.done || self.pending.is_some() {
            return Ok(());
        }
        let n = self.next;
        let client = self.client.clone();
        let flag = self.in_flight.clone();
        let task = match &mut self.source {
            Source::Cursor(statements) => {
                let stmt = match statements.get(&n) {
                    Some(s) => s.clone(),
                    None => {
                        // Prepared once per batch size.
                        let (c, sql) = (client.clone(), format!("FETCH FORWARD {n} FROM {CURSOR}"));
                        let s = self
                            .rt
                            .block_on(async move { c.prepare(&sql).await })
                            .map_err(|e| db_error(&e))?;
                        statements.insert(n, s.clone());
                        s
                    }
                };
                flag.store(true, Ordering::SeqCst);
                self.rt.spawn(async move {
                    let r = client.query(&stmt, &[]).await;
                    flag.store(false, Ordering::SeqCst);
                    (r, Instant::now())
                })
            }
            Source::Keyset(k) => {
                let (stmt, key) = match (&k.key, &k.first) {
                    (Some(key), _) => (k.next.clone(), key.clone()),
                    (None, Some(first)) => (first.clone(), Vec::new()),
                    (None, None) => return Err(internal("keyset batch without a key")),
                };
                let values = k.values.clone();
                let limit = n as i64;
                flag.store(true, Ordering::SeqCst);
                self.rt.spawn(async move {
                    let args: Vec<JsonParam<'_>> = values.iter().map(JsonParam).collect();
                    let keys: Vec<RawParam<'_>> = key.iter().map(|k| RawParam(k)).collect();
                    let r = client
                        .query(&stmt, &sql_params(&args, &keys, Some(&limit)))
                        .await;
                    flag.store(false, Ordering::SeqCst);
                    (r, Instant::now())
                })
            }
        };
        self.pending = Some((n, Instant::now(), task));
        Ok(())
    }

    /// The next batch (empty at the end), and the next one on its way.
    fn take(&mut self) -> Result<Vec<Row>, ErrorBody> {
        self.send()?;
        let Some((n, sent, task)) = self.pending.take() else {
            return Ok(Vec::new());
        };
        let (rows, arrived) = self.rt.block_on(task).map_err(internal)?;
        let rows = rows.map_err(|e| db_error(&e))?;
        // How long PostgreSQL took to deliver the batch.
        let took = arrived.saturating_duration_since(sent);
        if rows.len() < n {
            self.done = true;
        }
        if let (Source::Keyset(k), Some(last)) = (&mut self.source, rows.last()) {
            let width = last.len() - k.key_at;
            let key = (k.key_at..k.key_at + width)
                .map(|i| raw(last, i).map(<[u8]>::to_vec))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| internal("a key column of the last row is NULL"))?;
            k.key = Some(key);
        }
        // Grow while batches arrive within a few milliseconds (a fast query's
        // largest batch takes about 8 ms); shrink when the query is slow, so
        // rows wait less in PostgreSQL's buffer.
        self.next = if took < Duration::from_millis(8) {
            (n * 4).min(MAX_BATCH)
        } else if took > Duration::from_millis(40) {
            (n / 4).max(1)
        } else {
            n
        };
        self.send()?;
        Ok(rows)
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        if let Some((_, _, task)) = self.pending.take() {
            // Let the last batch finish before the cursor is closed.
            let _ = self.rt.block_on(task);
        }
    }
}

/// Rows of a running cursor.
struct PgRows<'s> {
    fetcher: Fetcher,
    batch: Vec<Row>,
    at: usize,
    started: bool,
    prefixes: Vec<Vec<u8>>,
    writers: Vec<Option<ValueWriter>>,
    shape: Shape,
    width: usize,
    keys: usize,
    _session: std::marker::PhantomData<&'s mut PgSession>,
    ctl: Arc<StreamCtl>,
}

impl<'s> PgRows<'s> {
    fn new(
        mut fetcher: Fetcher,
        columns: &[Column],
        shape: Shape,
        _session: &'s mut PgSession,
        ctl: &Arc<StreamCtl>,
    ) -> Result<Self, ErrorBody> {
        // The first batch before any row goes out: a refusal of the
        // read-only transaction arrives here, before the `200`.
        let batch = fetcher.take()?;
        let types: Vec<Type> = batch
            .first()
            .map(|r| r.columns().iter().map(|c| c.type_().clone()).collect())
            .unwrap_or_default();
        let width = columns.len();
        let writers = (0..width)
            .map(|i| types.get(i).and_then(ValueWriter::for_type))
            .collect();
        let prefixes = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut p = Vec::new();
                match shape {
                    Shape::Object => {
                        p.push(if i == 0 { b'{' } else { b',' });
                        crate::server::sql::write_json_str(&mut p, c.name.as_bytes());
                        p.push(b':');
                    }
                    Shape::Array => p.push(if i == 0 { b'[' } else { b',' }),
                }
                p
            })
            .collect();
        Ok(PgRows {
            fetcher,
            batch,
            at: 0,
            started: false,
            prefixes,
            writers,
            shape,
            width,
            keys: types.len().saturating_sub(width),
            _session: std::marker::PhantomData,
            ctl: ctl.clone(),
        })
    }
}

impl Drop for PgRows<'_> {
    fn drop(&mut self) {
        self.ctl.clear_interrupt();
    }
}

impl RowSource for PgRows<'_> {
    fn advance(&mut self) -> Result<bool, ErrorBody> {
        if self.started {
            self.at += 1;
        }
        self.started = true;
        if self.at < self.batch.len() {
            return Ok(true);
        }
        if self.fetcher.done && self.fetcher.pending.is_none() {
            self.batch.clear();
            return Ok(false);
        }
        self.batch = self.fetcher.take()?;
        self.at = 0;
        Ok(!self.batch.is_empty())
    }

    fn write(&self, out: &mut Vec<u8>) {
        let Some(row) = self.batch.get(self.at) else {
            return;
        };
        if self.width == 0 {
            out.extend_from_slice(match self.shape {
                Shape::Object => b"{}",
                Shape::Array => b"[]",
            });
            return;
        }
        for (i, p) in self.prefixes.iter().enumerate() {
            out.extend_from_slice(p);
            match &self.writers[i] {
                Some(w) => w.write(raw(row, i), out),
                None => match raw(row, i) {
                    // Read through the text output (see `gate`).
                    Some(b) => ValueWriter::Text.write(Some(b), out),
                    None => out.extend_from_slice(b"null"),
                },
            }
        }
        out.push(match self.shape {
            Shape::Object => b'}',
            Shape::Array => b']',
        });
    }

    fn key(&self) -> Option<ResumeKey> {
        if self.keys == 0 {
            return None;
        }
        let row = self.batch.get(self.at)?;
        (self.width..self.width + self.keys)
            .map(|i| raw(row, i).map(<[u8]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .map(ResumeKey::Values)
    }
}
