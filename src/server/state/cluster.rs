//! Shared state in a PostgreSQL database (`--cluster URL`): every instance
//! started with the same URL acts as one server.
//!
//! Tables (created by the server itself, versioned in `rowstream_schema`,
//! under an advisory lock so instances starting together do not race):
//!
//! - `rowstream_instances(id, seen_at_ms)`: a heartbeat per instance, every
//!   quarter of `--cluster-lease-ms`, on the database's clock;
//! - `rowstream_slots(id, instance, tenant, principal, acquired_at_ms)`: one
//!   row per running stream; taken under a transaction-level advisory lock
//!   after counting every instance's rows, so `stream.max_global` and
//!   `stream.max_per_principal` hold for the cluster. The slots of an
//!   instance whose heartbeat is older than the lease are deleted by the
//!   others;
//! - `rowstream_cursors(token_sha256, tenant, principal, instance, state,
//!   record, expires_at_ms, forget_at_ms, updated_at_ms)`: cursors and their
//!   tombstones. Only the SHA-256 of a token is stored: reading the table
//!   does not let anyone resume. Rows past `forget_at_ms` are pruned;
//! - `rowstream_checkpoints(token_sha256, rows, key, hasher)`: resume
//!   checkpoints (rows, key of the last row, exported digest state), so any
//!   instance resumes near its row.
//!
//! A cancel on any instance tombstones the row; the instance running the
//! stream sees it within 100 ms (it polls the tombstones of its cursors)
//! and stops the stream, which interrupts the query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_postgres::{Client, Config, NoTls};

use super::{CheckpointRecord, CursorRecord, SharedState, Slot};
use crate::core::capacity::{CapacityError, CapacityKind, CapacityLimits};
use crate::core::cursor::{CursorError, DEFAULT_TOMBSTONE_GRACE_MS};
use crate::core::digest::sha256_hex;
use crate::core::lease::Scope;
use crate::server::backend::postgres::{parse_config, redact_url, PgSetupError};
use crate::server::lock;

/// The schema version this server writes.
const SCHEMA_VERSION: i32 = 1;
/// Advisory lock keys (arbitrary, fixed).
const SCHEMA_LOCK: i64 = 0x726f_7773_0001;
const SLOT_LOCK: i64 = 0x726f_7773_0002;
/// Idle cluster connections kept.
const POOL_SIZE: usize = 8;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS rowstream_instances (
    id text PRIMARY KEY,
    seen_at_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS rowstream_slots (
    id bigserial PRIMARY KEY,
    instance text NOT NULL,
    tenant text NOT NULL,
    principal text NOT NULL,
    acquired_at_ms bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS rowstream_slots_instance ON rowstream_slots (instance);
CREATE TABLE IF NOT EXISTS rowstream_cursors (
    token_sha256 text PRIMARY KEY,
    tenant text NOT NULL,
    principal text NOT NULL,
    instance text NOT NULL,
    state text NOT NULL CHECK (state IN ('live', 'cancelled')),
    record jsonb NOT NULL,
    expires_at_ms bigint NOT NULL,
    forget_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS rowstream_cursors_cancelled
    ON rowstream_cursors (updated_at_ms) WHERE state = 'cancelled';
CREATE TABLE IF NOT EXISTS rowstream_checkpoints (
    token_sha256 text NOT NULL REFERENCES rowstream_cursors ON DELETE CASCADE,
    rows bigint NOT NULL,
    key jsonb,
    hasher bytea NOT NULL,
    PRIMARY KEY (token_sha256, rows)
);
";

/// The database's clock, in Unix milliseconds.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Shared state in PostgreSQL.
pub(crate) struct ClusterState {
    config: Config,
    display: String,
    instance: String,
    lease_ms: u64,
    pool: Mutex<Vec<Arc<Client>>>,
    local_slots: Arc<AtomicU32>,
    /// Tokens of the cursors this instance holds, by their SHA-256.
    local_cursors: Mutex<HashMap<String, String>>,
    /// The last time a check reached the database.
    healthy: AtomicBool,
    /// The server's runtime (set when it starts serving), for work handed
    /// off from threads outside it.
    rt: std::sync::OnceLock<Handle>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("url", &self.display)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A held cluster slot: its row is deleted when dropped.
struct ClusterSlot {
    id: i64,
    state: Arc<ClusterState>,
}

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        self.state.local_slots.fetch_sub(1, Ordering::SeqCst);
        let (state, id) = (self.state.clone(), self.id);
        let release = async move {
            if let Ok(c) = state.client().await {
                let _ = c
                    .execute("DELETE FROM rowstream_slots WHERE id = $1", &[&id])
                    .await;
                state.checkin(c);
            }
        };
        if let Some(rt) = Handle::try_current()
            .ok()
            .or_else(|| self.state.rt.get().cloned())
        {
            rt.spawn(release);
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match Handle::try_current() {
        Ok(rt) => tokio::task::block_in_place(|| rt.block_on(f)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f),
    }
}

impl ClusterState {
    /// Connects, creates or checks the schema, and registers the instance.
    pub(crate) fn open(
        url: &str,
        instance: String,
        lease_ms: u64,
    ) -> Result<Arc<ClusterState>, PgSetupError> {
        let config = parse_config(url)?;
        let display = redact_url(url);
        let state = Arc::new(ClusterState {
            config,
            display: display.clone(),
            instance,
            lease_ms: lease_ms.max(100),
            pool: Mutex::new(Vec::new()),
            local_slots: Arc::new(AtomicU32::new(0)),
            local_cursors: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            rt: std::sync::OnceLock::new(),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(async move {
                    let (client, conn) =
                        s.config.connect(NoTls).await.map_err(|e| e.to_string())?;
                    let task = tokio::spawn(conn);
                    let r = s.migrate(&client).await;
                    if r.is_ok() {
                        tracing::info!(target: "rowstream::cluster", instance = %s.instance, schema = SCHEMA_VERSION, "joined the cluster");
                    }
                    drop(client);
                    let _ = task.await;
                    r
                })
        })
        .join()
        .map_err(|_| PgSetupError::Connect(display.clone(), "schema setup panicked".into()))?
        .map_err(|e| PgSetupError::Connect(display, e))?;
        Ok(state)
    }

    async fn migrate(&self, c: &Client) -> Result<(), String> {
        let e = |e: tokio_postgres::Error| e.to_string();
        c.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(e)?;
        let r = async {
            c.batch_execute("CREATE TABLE IF NOT EXISTS rowstream_schema (version int NOT NULL)")
                .await
                .map_err(e)?;
            let have: Option<i32> = c
                .query_opt("SELECT max(version) FROM rowstream_schema", &[])
                .await
                .map_err(e)?
                .and_then(|r| r.get(0));
            match have {
                Some(v) if v > SCHEMA_VERSION => Err(format!(
                    "the cluster database has schema version {v}, newer than this server's \
                     {SCHEMA_VERSION}: upgrade this instance"
                )),
                Some(v) if v == SCHEMA_VERSION => Ok(()),
                _ => {
                    c.batch_execute(SCHEMA_V1).await.map_err(e)?;
                    c.execute(
                        "INSERT INTO rowstream_schema (version) VALUES ($1)",
                        &[&SCHEMA_VERSION],
                    )
                    .await
                    .map_err(e)?;
                    Ok(())
                }
            }
        }
        .await;
        let _ = c
            .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
            .await;
        r
    }

    async fn client(&self) -> Result<Arc<Client>, String> {
        loop {
            let pooled = lock(&self.pool).pop();
            match pooled {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok(c),
                None => break,
            }
        }
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(5), self.config.connect(NoTls))
                .await
                .map_err(|_| "connecting to the cluster database timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Arc::new(client))
    }

    fn checkin(&self, c: Arc<Client>) {
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_SIZE && !c.is_closed() {
            pool.push(c);
        }
    }

    /// Runs `f` on a pooled connection.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let c = self.client().await?;
        let r = f(&c).await;
        match r {
            Ok(v) => {
                self.healthy.store(true, Ordering::SeqCst);
                self.checkin(c);
                Ok(v)
            }
            Err(e) => {
                if e.as_db_error().is_none() {
                    self.healthy.store(false, Ordering::SeqCst);
                } else {
                    self.checkin(c);
                }
                Err(e.to_string())
            }
        }
    }

    /// Heartbeats, reclaims the slots of vanished instances and prunes old
    /// cursors; every quarter lease. Runs until the server stops.
    pub(crate) async fn heartbeat(self: Arc<Self>, now_ms: impl Fn() -> u64 + Send) {
        let _ = self.rt.set(Handle::current());
        let every = Duration::from_millis((self.lease_ms / 4).clamp(50, 2000));
        loop {
            let lease = self.lease_ms as i64;
            let now = now_ms() as i64;
            let instance = self.instance.clone();
            let was_healthy = self.healthy.load(Ordering::SeqCst);
            let beat = self
                .with(async |c: &Client| {
                    c.execute(
                        &format!(
                            "INSERT INTO rowstream_instances (id, seen_at_ms) VALUES ($1, {DB_NOW_MS}) \
                             ON CONFLICT (id) DO UPDATE SET seen_at_ms = EXCLUDED.seen_at_ms"
                        ),
                        &[&instance],
                    )
                    .await?;
                    let reclaimed = c
                        .execute(
                            &format!(
                                "DELETE FROM rowstream_slots s WHERE NOT EXISTS (SELECT 1 FROM \
                                 rowstream_instances i WHERE i.id = s.instance AND i.seen_at_ms > \
                                 {DB_NOW_MS} - $1)"
                            ),
                            &[&lease],
                        )
                        .await?;
                    let pruned = c
                        .execute(
                            "DELETE FROM rowstream_cursors WHERE forget_at_ms < $1",
                            &[&now],
                        )
                        .await?;
                    Ok((reclaimed, pruned))
                })
                .await;
            match beat {
                Ok((reclaimed, pruned)) => {
                    if !was_healthy {
                        tracing::info!(target: "rowstream::cluster", instance = %self.instance, "cluster database reachable again");
                    }
                    if reclaimed > 0 {
                        tracing::info!(target: "rowstream::cluster", reclaimed, "reclaimed the capacity slots of vanished instances");
                    }
                    if pruned > 0 {
                        tracing::debug!(target: "rowstream::cluster", pruned, "pruned expired cursors");
                    }
                }
                Err(e) if was_healthy => {
                    tracing::warn!(target: "rowstream::cluster", instance = %self.instance, error = %e, "heartbeat failed");
                }
                Err(_) => {}
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Polls for cancels of this instance's cursors made on other
    /// instances, every 100 ms, and hands their tokens to `cancel`.
    pub(crate) async fn watch_cancels(self: Arc<Self>, cancel: impl Fn(&str) + Send) {
        let mut since: i64 = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if lock(&self.local_cursors).is_empty() {
                continue;
            }
            let instance = self.instance.clone();
            let rows = self
                .with(async |c: &Client| {
                    c.query(
                        "SELECT token_sha256, updated_at_ms FROM rowstream_cursors \
                         WHERE state = 'cancelled' AND instance = $1 AND updated_at_ms >= $2",
                        &[&instance, &since],
                    )
                    .await
                })
                .await;
            let Ok(rows) = rows else { continue };
            for r in rows {
                let hash: String = r.get(0);
                let at: i64 = r.get(1);
                since = since.max(at - 1000);
                let token = lock(&self.local_cursors).remove(&hash);
                if let Some(token) = token {
                    cancel(&token);
                }
            }
        }
    }

    /// Forgets the local cursors for which `live` is false (expired here).
    pub(crate) fn retain_local(&self, live: impl Fn(&str) -> bool) {
        lock(&self.local_cursors).retain(|_, token| live(token));
    }

    fn remember_local(&self, token: &str) {
        lock(&self.local_cursors).insert(sha256_hex(token.as_bytes()), token.to_owned());
    }
}

/// `SharedState` for an `Arc<ClusterState>` (slots keep the state alive).
pub(crate) struct Cluster(pub(crate) Arc<ClusterState>);

impl SharedState for Cluster {
    fn instance(&self) -> &str {
        &self.0.instance
    }

    fn acquire_slot(&self, scope: &Scope, limits: CapacityLimits) -> Result<Slot, CapacityError> {
        let st = self.0.clone();
        let (tenant, principal, instance) = (
            scope.tenant.clone(),
            scope.principal.clone(),
            st.instance.clone(),
        );
        let (max_g, max_p) = (
            i64::from(limits.max_global),
            i64::from(limits.max_per_principal),
        );
        let r = block_on(async {
            st.with(async |c: &Client| {
                c.batch_execute("BEGIN").await?;
                let r = async {
                    c.execute("SELECT pg_advisory_xact_lock($1)", &[&SLOT_LOCK])
                        .await?;
                    let counts = c
                        .query_one(
                            "SELECT count(*), count(*) FILTER (WHERE tenant = $1 AND principal = $2) \
                             FROM rowstream_slots",
                            &[&tenant, &principal],
                        )
                        .await?;
                    let (g, p): (i64, i64) = (counts.get(0), counts.get(1));
                    if g >= max_g {
                        return Ok(Err((CapacityKind::Global, g)));
                    }
                    if p >= max_p {
                        return Ok(Err((CapacityKind::Principal, p)));
                    }
                    let id: i64 = c
                        .query_one(
                            &format!(
                                "INSERT INTO rowstream_slots (instance, tenant, principal, \
                                 acquired_at_ms) VALUES ($1, $2, $3, {DB_NOW_MS}) RETURNING id"
                            ),
                            &[&instance, &tenant, &principal],
                        )
                        .await?
                        .get(0);
                    Ok(Ok(id))
                }
                .await;
                match &r {
                    Ok(_) => c.batch_execute("COMMIT").await?,
                    Err(_) => {
                        let _ = c.batch_execute("ROLLBACK").await;
                    }
                }
                r
            })
            .await
        });
        match r {
            Ok(Ok(id)) => {
                st.local_slots.fetch_add(1, Ordering::SeqCst);
                Ok(Slot::new(ClusterSlot { id, state: st }))
            }
            Ok(Err((kind, current))) => Err(CapacityError {
                kind,
                limit: match kind {
                    CapacityKind::Global => limits.max_global,
                    CapacityKind::Principal => limits.max_per_principal,
                },
                current: u32::try_from(current).unwrap_or(u32::MAX),
            }),
            // The cluster is unreachable: no slot can be counted, so none is
            // given (the client retries after Retry-After).
            Err(_) => Err(CapacityError {
                kind: CapacityKind::Global,
                limit: limits.max_global,
                current: limits.max_global,
            }),
        }
    }

    fn slots_in_use(&self) -> u32 {
        self.0.local_slots.load(Ordering::SeqCst)
    }

    fn publish_cursor(&self, token: &str, record: &CursorRecord) -> Result<(), String> {
        let st = self.0.clone();
        let hash = sha256_hex(token.as_bytes());
        let json = serde_json::to_value(record).map_err(|e| e.to_string())?;
        let (tenant, principal) = (record.scope.tenant.clone(), record.scope.principal.clone());
        let expires = record.expires_at_ms as i64;
        let forget = record
            .expires_at_ms
            .saturating_add(DEFAULT_TOMBSTONE_GRACE_MS) as i64;
        let instance = st.instance.clone();
        let h = hash.clone();
        block_on(async {
            st.with(async |c: &Client| {
                c.execute(
                    "INSERT INTO rowstream_cursors (token_sha256, tenant, principal, instance, \
                     state, record, expires_at_ms, forget_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, 'live', $5, $6, $7, 0)",
                    &[&h, &tenant, &principal, &instance, &json, &expires, &forget],
                )
                .await
            })
            .await
        })?;
        st.remember_local(token);
        Ok(())
    }

    fn lookup_cursor(
        &self,
        token: &str,
        scope: &Scope,
        now_ms: u64,
    ) -> Result<Option<(CursorRecord, Vec<CheckpointRecord>)>, CursorError> {
        let st = self.0.clone();
        let hash = sha256_hex(token.as_bytes());
        let row = block_on(async {
            st.with(async |c: &Client| {
                let row = c
                    .query_opt(
                        "SELECT tenant, principal, state, record, expires_at_ms \
                         FROM rowstream_cursors WHERE token_sha256 = $1",
                        &[&hash],
                    )
                    .await?;
                let cps = c
                    .query(
                        "SELECT rows, key, hasher FROM rowstream_checkpoints \
                         WHERE token_sha256 = $1 ORDER BY rows",
                        &[&hash],
                    )
                    .await?;
                Ok((row, cps))
            })
            .await
        })
        .map_err(|_| CursorError::NotFound)?;
        let (Some(row), cps) = row else {
            return Ok(None);
        };
        let (tenant, principal, state): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        if tenant != scope.tenant || principal != scope.principal {
            return Err(CursorError::NotFound);
        }
        if state == "cancelled" {
            return Err(CursorError::Cancelled);
        }
        let expires: i64 = row.get(4);
        if now_ms as i64 > expires {
            return Err(CursorError::Expired);
        }
        let record: CursorRecord =
            serde_json::from_value(row.get(3)).map_err(|_| CursorError::NotFound)?;
        let checkpoints = cps
            .iter()
            .filter_map(|r| {
                Some(CheckpointRecord {
                    rows: u64::try_from(r.get::<_, i64>(0)).ok()?,
                    key: r
                        .get::<_, Option<serde_json::Value>>(1)
                        .and_then(|k| serde_json::from_value(k).ok()),
                    hasher: r.get(2),
                })
            })
            .collect();
        Ok(Some((record, checkpoints)))
    }

    fn cancel_cursor(&self, token: &str, scope: &Scope, now_ms: u64) -> Result<bool, CursorError> {
        let st = self.0.clone();
        let hash = sha256_hex(token.as_bytes());
        let (tenant, principal) = (scope.tenant.clone(), scope.principal.clone());
        let now = now_ms as i64;
        let forget = now_ms.saturating_add(DEFAULT_TOMBSTONE_GRACE_MS) as i64;
        let r = block_on(async {
            st.with(async |c: &Client| {
                let owner = c
                    .query_opt(
                        "SELECT tenant, principal FROM rowstream_cursors WHERE token_sha256 = $1",
                        &[&hash],
                    )
                    .await?;
                let Some(owner) = owner else {
                    return Ok(None);
                };
                let (t, p): (String, String) = (owner.get(0), owner.get(1));
                if t != tenant || p != principal {
                    return Ok(Some(false));
                }
                c.execute(
                    &format!(
                        "UPDATE rowstream_cursors SET state = 'cancelled', \
                         forget_at_ms = greatest(forget_at_ms, $2), updated_at_ms = {DB_NOW_MS} \
                         WHERE token_sha256 = $1"
                    ),
                    &[&hash, &forget],
                )
                .await?;
                let _ = now;
                Ok(Some(true))
            })
            .await
        })
        .map_err(|_| CursorError::NotFound)?;
        match r {
            None => Ok(false),
            Some(false) => Err(CursorError::NotFound),
            Some(true) => Ok(true),
        }
    }

    fn save_checkpoint(&self, token: &str, checkpoint: CheckpointRecord) {
        let st = self.0.clone();
        let hash = sha256_hex(token.as_bytes());
        let Some(rt) = Handle::try_current().ok().or_else(|| st.rt.get().cloned()) else {
            return;
        };
        rt.spawn(async move {
            let rows = checkpoint.rows as i64;
            let key = checkpoint
                .key
                .as_ref()
                .and_then(|k| serde_json::to_value(k).ok());
            let hasher = checkpoint.hasher;
            let _ = st
                .with(async |c: &Client| {
                    c.execute(
                        "INSERT INTO rowstream_checkpoints (token_sha256, rows, key, hasher) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&hash, &rows, &key, &hasher],
                    )
                    .await
                })
                .await;
        });
    }

    fn check(&self) -> Result<(), String> {
        let st = self.0.clone();
        block_on(async {
            st.with(async |c: &Client| c.simple_query("SELECT 1").await)
                .await
                .map(|_| ())
        })
    }
}
