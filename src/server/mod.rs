//! The native reference server (feature `server`): PROTOCOL.md §1–3, §5, §6
//! over axum/hyper/tokio and embedded SQLite.
//!
//! The binary `rowstream` is a thin command line over [`Server`]; tests and
//! embedders start the same server in-process:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let server = rowstream::server::Server::builder()
//!     .db("app.sqlite")
//!     .token("s3cret", "default", "alice")
//!     .build()
//!     .expect("valid configuration");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener, std::future::pending()).await
//! # }
//! ```
//!
//! Users who only want to stream rows from their own axum handlers use
//! [`integration`] instead. Design notes: `SERVER.md`.

pub mod auth;
pub mod backend;
pub mod compress;
pub mod demo;
#[doc(hidden)]
pub mod fuzz_api;
mod handoff;
pub mod ingest;
pub mod integration;
pub mod limits;
mod listen;
mod ops;
pub mod pipe;
mod respond;
mod rewrite;
mod routes;
mod state;
mod stream;

/// SQLite's read path (kept at its old path for users of `RowWriter`).
pub use self::backend::sqlite::sql;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::core::audit::{AuditEvent, AuditSink, JsonLinesAuditSink};
use crate::core::clock::SystemClock;
use crate::core::config::{StreamConfig, KEYS};
use crate::core::cursor::CursorRegistry;
use crate::core::lease::{LeaseIssuer, Scope};

use self::auth::Auth;
use self::backend::postgres::{is_postgres_url, PgBackend, PgSetupError, PgTenant};
use self::backend::sqlite::{SqliteBackend, SqliteTenant};
use self::backend::ReadBackend;
use self::pipe::{SharedClock, StopCause, StreamCtl};
use self::sql::ConnectionInit;
use self::state::cluster::{Cluster, ClusterState};
use self::state::{LocalState, SharedState};
use self::stream::Pinned;

pub use self::auth::{sign_hs256, Caller};
pub use self::ingest::{IngestMode, IngestSettings};

/// Rows between two resume checkpoints, by default.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1024;

/// Most pinned snapshots (cursors) held at once, by default.
pub const DEFAULT_MAX_PINNED: usize = 1024;

/// Largest accepted request body (1 MiB).
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A configuration the server refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No database at all.
    #[error("no database: pass --db PATH or --tenant NAME=PATH")]
    NoTenant,
    /// A `--set` key that is not a `stream.*` key.
    #[error("unknown configuration key {0:?} (known: {known})", known = KEYS.join(", "))]
    UnknownKey(String),
    /// An open server must know which tenant anonymous callers read.
    #[error("several tenants and no token: configure --token or --jwt-secret, or name one tenant `default`")]
    AmbiguousOpenTenant,
    /// A token names a tenant that is not served.
    #[error("token for unknown tenant {0:?}")]
    TokenTenant(String),
    /// The same tenant twice.
    #[error("tenant {0:?} is configured twice")]
    DuplicateTenant(String),
    /// A database could not be opened or put in WAL mode.
    #[error("database {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database refused WAL mode.
    #[error("database {0}: could not switch to WAL journal mode")]
    NotWal(PathBuf),
    /// A PostgreSQL tenant could not be set up.
    #[error(transparent)]
    Postgres(#[from] PgSetupError),
}

/// Counters for monitoring and tests (`GET /v1/debug/stats`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerStats {
    /// Read transactions held open for cursors (each costs WAL growth).
    pub pinned_snapshots: usize,
    /// Responses being produced right now.
    pub running_streams: usize,
    /// Capacity slots held.
    pub slots_in_use: u32,
    /// Live cursors.
    pub cursors_live: usize,
    /// Cursor tombstones.
    pub cursor_tombstones: usize,
    /// Rows re-read (skipped or re-hashed) to verify resumes, in total. With
    /// checkpoints and the rowid rewrite this grows by less than the
    /// checkpoint interval per resume, however late the resume point.
    pub resume_rows_replayed: u64,
    /// This instance's name (`--instance-id`, random by default).
    pub instance: String,
}

/// One tenant's database.
#[derive(Clone)]
pub(crate) enum TenantDb {
    /// A SQLite file.
    Sqlite(Arc<SqliteTenant>),
    /// A PostgreSQL database.
    Postgres(Arc<PgTenant>),
}

impl TenantDb {
    /// The read path.
    pub(crate) fn reader(&self) -> Arc<dyn ReadBackend> {
        match self {
            TenantDb::Sqlite(t) => Arc::new(SqliteBackend(t.clone())),
            TenantDb::Postgres(t) => Arc::new(PgBackend(t.clone())),
        }
    }
}

/// Shared state of one server.
pub(crate) struct AppState {
    pub(crate) tenants: HashMap<String, TenantDb>,
    pub(crate) auth: Auth,
    pub(crate) boot: StreamConfig,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) clock: SharedClock,
    pub(crate) shared: Arc<dyn SharedState>,
    pub(crate) metrics: ops::Metrics,
    /// The cluster store, with `--cluster` (heartbeats, cancel watch).
    pub(crate) cluster: Option<Arc<ClusterState>>,
    pub(crate) cursors: CursorRegistry<Pinned>,
    pub(crate) leases: LeaseIssuer,
    pub(crate) running: Mutex<HashMap<u64, Arc<StreamCtl>>>,
    pub(crate) next_stream: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) pinned: Arc<AtomicUsize>,
    pub(crate) replayed: AtomicU64,
    /// Streams stepping their query right now, and the cores to run them:
    /// a long result gets an encoding thread of its own only while streams
    /// are fewer than cores (see `handoff`).
    pub(crate) producing: AtomicUsize,
    pub(crate) cores: usize,
    pub(crate) checkpoint_every: u64,
    pub(crate) max_pinned: usize,
    pub(crate) static_dir: Option<PathBuf>,
    pub(crate) ingest: IngestSettings,
    pub(crate) limits: limits::QueryLimits,
    pub(crate) compression: compress::Compression,
}

impl AppState {
    /// Registers a running stream or upload so shutdown can stop it (at once
    /// when shutdown already began). Returns its key in `running`.
    pub(crate) fn register_running(&self, ctl: &Arc<StreamCtl>) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(id, ctl.clone());
        if self.shutting_down.load(Ordering::SeqCst) {
            ctl.stop(StopCause::Shutdown);
        }
        id
    }

    pub(crate) fn record(&self, e: AuditEvent) {
        self.metrics.saw(&e);
        ops::log_lifecycle(&e);
        self.audit.record(&e);
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records the one `stream.closed` of `lease` (a stream's or an
    /// upload's), timed from when the lease opened.
    pub(crate) fn record_lease_closed(
        &self,
        lease: &crate::core::lease::StreamLease,
        scope: &Scope,
        reason: crate::core::close::CloseReason,
        cause: String,
        row_count: u64,
        bytes_written: u64,
    ) {
        let now = self.now_ms();
        self.record(AuditEvent::StreamClosed {
            at_ms: now,
            lease: Some(lease.handle().to_owned()),
            reason,
            cause,
            row_count,
            bytes_written,
            duration_ms: now.saturating_sub(lease.opened_at_ms),
            principal: scope.principal.clone(),
            tenant: scope.tenant.clone(),
        });
    }

    fn stats(&self) -> ServerStats {
        let c = self.cursors.stats();
        ServerStats {
            pinned_snapshots: self.pinned.load(Ordering::SeqCst),
            running_streams: lock(&self.running).len(),
            slots_in_use: self.shared.slots_in_use(),
            cursors_live: c.live,
            cursor_tombstones: c.tombstones,
            resume_rows_replayed: self.replayed.load(Ordering::Relaxed),
            instance: self.shared.instance().to_owned(),
        }
    }

    /// Stops every running stream (cause `shutdown`) and refuses new ones.
    fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let running: Vec<_> = lock(&self.running).values().cloned().collect();
        for ctl in running {
            ctl.stop(StopCause::Shutdown);
        }
    }
}

/// Builds a [`Server`].
pub struct ServerBuilder {
    tenants: Vec<(String, PathBuf)>,
    tokens: Vec<(String, Scope)>,
    jwt_secret: Option<Vec<u8>>,
    settings: BTreeMap<String, String>,
    audit: Option<Arc<dyn AuditSink>>,
    clock: SharedClock,
    checkpoint_every: u64,
    max_pinned: usize,
    static_dir: Option<PathBuf>,
    init: Option<ConnectionInit>,
    ingest: IngestSettings,
    limits: limits::QueryLimits,
    allow_privileged_role: bool,
    writers: HashMap<String, String>,
    cluster: Option<String>,
    cluster_lease_ms: u64,
    instance_id: Option<String>,
    compression: compress::Compression,
}

/// How long a vanished instance's slots stay counted, by default.
pub const DEFAULT_CLUSTER_LEASE_MS: u64 = 10_000;

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("tenants", &self.tenants)
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt_secret.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Serves `path` as tenant `default`.
    pub fn db(self, path: impl Into<PathBuf>) -> Self {
        self.tenant("default", path)
    }

    /// Serves `path` as tenant `name`: a SQLite file, or a PostgreSQL
    /// database when it is a `postgres://` / `postgresql://` URL.
    pub fn tenant(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.tenants.push((name.into(), path.into()));
        self
    }

    /// A static bearer token for `tenant`/`principal`.
    pub fn token(
        mut self,
        token: impl Into<String>,
        tenant: impl Into<String>,
        principal: impl Into<String>,
    ) -> Self {
        self.tokens
            .push((token.into(), Scope::new(tenant.into(), principal.into())));
        self
    }

    /// Accept HS256 JWTs signed with `secret`.
    pub fn jwt_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// A boot-time `stream.*` value (the tenant's `rowstream_config` wins).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Where audit events go (default: JSON lines on stderr).
    pub fn audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Rows between resume checkpoints (default 1024, at least 1).
    pub fn checkpoint_every(mut self, rows: u64) -> Self {
        self.checkpoint_every = rows.max(1);
        self
    }

    /// Most snapshots pinned at once, over all tenants (default 1024). Past
    /// it, resumable queries are streamed without a cursor
    /// (`open.reason` = `snapshot_limit`).
    pub fn max_pinned(mut self, n: usize) -> Self {
        self.max_pinned = n;
        self
    }

    /// Runs `init` on every read connection (register SQL functions...).
    pub fn connection_init(
        mut self,
        init: impl Fn(&Connection) -> rusqlite::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.init = Some(Arc::new(init));
        self
    }

    /// `Content-Encoding` of streamed responses: on by default (zstd, br or
    /// gzip as the client accepts, at fast levels); `enabled: false` sends
    /// identity always (`--compression off`).
    pub fn compression(mut self, c: compress::Compression) -> Self {
        self.compression = c;
        self
    }

    /// How input streams are made atomic (default [`IngestMode::Staged`]).
    pub fn ingest_mode(mut self, mode: IngestMode) -> Self {
        self.ingest.mode = mode;
        self
    }

    /// Longest line of an input stream (default 1 MiB, at least 1 byte).
    pub fn ingest_max_line_bytes(mut self, n: usize) -> Self {
        self.ingest.max_line_bytes = n.max(1);
        self
    }

    /// Largest input-stream body (default: no limit).
    pub fn ingest_max_body_bytes(mut self, n: Option<u64>) -> Self {
        self.ingest.max_body_bytes = n;
        self
    }

    /// Longest wait for the next piece of an upload (default 30 s).
    pub fn ingest_idle_timeout(mut self, d: Duration) -> Self {
        self.ingest.idle_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// Resource limits of streamed queries (step time, value size); see
    /// [`limits`].
    pub fn query_limits(mut self, limits: limits::QueryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Accept PostgreSQL tenant roles that are superusers or have
    /// `BYPASSRLS` (refused by default: streaming should run as a
    /// SELECT-only role).
    pub fn allow_privileged_role(mut self, yes: bool) -> Self {
        self.allow_privileged_role = yes;
        self
    }

    /// The PostgreSQL role tenant `name` accepts uploads through (a role
    /// with INSERT on the target tables; the stream path never uses it).
    /// Without one, uploads to a PostgreSQL tenant answer
    /// `403 ingest_not_allowed`.
    pub fn tenant_writer(mut self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.writers.insert(name.into(), url.into());
        self
    }

    /// Share cursors, checkpoints, tombstones and capacity slots with every
    /// instance started with the same PostgreSQL `url`: they act as one
    /// server (resume, cancel and quotas on any of them).
    pub fn cluster(mut self, url: impl Into<String>) -> Self {
        self.cluster = Some(url.into());
        self
    }

    /// How long a vanished instance's slots may stay counted before the
    /// others reclaim them (default 10 s).
    pub fn cluster_lease_ms(mut self, ms: u64) -> Self {
        self.cluster_lease_ms = ms;
        self
    }

    /// This instance's name (default: random).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Serve the files of `dir` at `/` (GET only).
    pub fn static_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.static_dir = Some(dir.into());
        self
    }

    /// Opens every database (creating missing files, switching to WAL) and
    /// checks the configuration.
    pub fn build(self) -> Result<Server, ServerError> {
        if self.tenants.is_empty() {
            return Err(ServerError::NoTenant);
        }
        if let Some(k) = self.settings.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ServerError::UnknownKey(k.clone()));
        }
        let boot = StreamConfig::load(&self.settings);
        let mut tenants = HashMap::new();
        for (name, path) in &self.tenants {
            if tenants.contains_key(name) {
                return Err(ServerError::DuplicateTenant(name.clone()));
            }
            let db = match path.to_str().filter(|p| is_postgres_url(p)) {
                Some(url) => TenantDb::Postgres(Arc::new(PgTenant::open(
                    url,
                    self.writers.get(name).map(String::as_str),
                    self.allow_privileged_role,
                    self.limits.max_step_ms,
                )?)),
                None => TenantDb::Sqlite(Arc::new(SqliteTenant::open(
                    path,
                    self.init.clone(),
                    self.limits,
                )?)),
            };
            tenants.insert(name.clone(), db);
        }
        for (_, scope) in &self.tokens {
            if !tenants.contains_key(&scope.tenant) {
                return Err(ServerError::TokenTenant(scope.tenant.clone()));
            }
        }
        let open_tenant = if tenants.contains_key("default") {
            Some("default".to_owned())
        } else if tenants.len() == 1 {
            tenants.keys().next().cloned()
        } else {
            None
        };
        let auth = Auth::new(
            self.tokens.into_iter().collect(),
            self.jwt_secret,
            open_tenant.clone(),
        );
        if auth.is_open() && open_tenant.is_none() {
            return Err(ServerError::AmbiguousOpenTenant);
        }
        let instance = self
            .instance_id
            .clone()
            .unwrap_or_else(|| crate::core::token::random_hex::<4>().unwrap_or_default());
        let (shared, cluster): (Arc<dyn SharedState>, Option<Arc<ClusterState>>) =
            match &self.cluster {
                Some(url) => {
                    let c = ClusterState::open(url, instance.clone(), self.cluster_lease_ms)?;
                    (Arc::new(Cluster(c.clone())), Some(c))
                }
                None => (Arc::new(LocalState::new(instance.clone())), None),
            };
        let named = self.instance_id.is_some() || self.cluster.is_some();
        let audit = self.audit.unwrap_or_else(|| {
            let sink = JsonLinesAuditSink::new(std::io::stderr());
            Arc::new(if named {
                sink.with_instance(instance.clone())
            } else {
                sink
            })
        });
        Ok(Server {
            state: Arc::new(AppState {
                tenants,
                auth,
                boot,
                audit,
                clock: self.clock,
                shared,
                metrics: ops::Metrics::default(),
                cluster,
                cursors: CursorRegistry::new(),
                leases: LeaseIssuer::new(),
                running: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
                pinned: Arc::new(AtomicUsize::new(0)),
                replayed: AtomicU64::new(0),
                producing: AtomicUsize::new(0),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                checkpoint_every: self.checkpoint_every,
                max_pinned: self.max_pinned,
                static_dir: self.static_dir,
                ingest: self.ingest,
                limits: self.limits,
                compression: self.compression,
            }),
        })
    }
}

/// The server: state plus routes. Cheap to clone a [`ServerHandle`] from.
pub struct Server {
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// Stats and shutdown for a running server.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<AppState>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Current counters.
    pub fn stats(&self) -> ServerStats {
        self.state.stats()
    }

    /// Expires cursors past their TTL and releases their pinned snapshots.
    /// [`Server::serve`] does this every 100 ms; call it from your own timer
    /// when you serve [`Server::router`] yourself.
    pub fn prune_cursors(&self) -> usize {
        self.state.cursors.prune(self.state.now_ms())
    }

    /// Ends every running stream with reason `cancelled` (cause `shutdown`)
    /// and refuses new ones with `503 shutting_down`.
    pub fn begin_shutdown(&self) {
        self.state.begin_shutdown();
    }
}

impl Server {
    /// A builder with no tenant yet.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            tenants: Vec::new(),
            tokens: Vec::new(),
            jwt_secret: None,
            settings: BTreeMap::new(),
            audit: None,
            clock: Arc::new(SystemClock),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            max_pinned: DEFAULT_MAX_PINNED,
            static_dir: None,
            init: None,
            ingest: IngestSettings::default(),
            limits: limits::QueryLimits::default(),
            allow_privileged_role: false,
            writers: HashMap::new(),
            cluster: None,
            cluster_lease_ms: DEFAULT_CLUSTER_LEASE_MS,
            instance_id: None,
            compression: compress::Compression::default(),
        }
    }

    /// True when no token or secret is configured (every caller is `anonymous`).
    pub fn is_open(&self) -> bool {
        self.state.auth.is_open()
    }

    /// The boot-time configuration (before each tenant's runtime table).
    pub fn boot_config(&self) -> &StreamConfig {
        &self.state.boot
    }

    /// A handle for stats and shutdown.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
        }
    }

    /// The axum router (routes, CORS, errors), for embedding or custom serving.
    /// Cursor pruning needs [`Server::serve`], or a timer calling
    /// [`ServerHandle::prune_cursors`].
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then ends running streams (they send
    /// their `end` line with reason `cancelled`), waits for them, and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let pruner = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let now = state.now_ms();
                    state.cursors.prune(now);
                    if let Some(c) = &state.cluster {
                        c.retain_local(|token| state.cursors.is_live(token));
                    }
                }
            })
        };
        let cluster_tasks: Vec<_> = match &state.cluster {
            Some(c) => {
                let clock = state.clock.clone();
                let heartbeat = tokio::spawn(c.clone().heartbeat(move || clock.now_ms()));
                let st = state.clone();
                let watch = tokio::spawn(c.clone().watch_cancels(move |token| {
                    st.cursors.cancel_authorised(token, st.now_ms());
                }));
                vec![heartbeat, watch]
            }
            None => Vec::new(),
        };
        let app = self.router();
        let st = state.clone();
        let result = listen::serve(listener, app, state.limits.header_timeout(), async move {
            shutdown.await;
            st.begin_shutdown();
        })
        .await;
        state.begin_shutdown();
        for _ in 0..100 {
            if lock(&state.running).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pruner.abort();
        for t in cluster_tasks {
            t.abort();
        }
        result
    }

    /// Starts the server on its own thread and runtime (tests, embedding in
    /// synchronous programs). The address may use port 0.
    pub fn spawn(self, addr: &str) -> std::io::Result<BackgroundServer> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let handle = self.handle();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rowstream-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    self.serve(listener, async move {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            })?;
        Ok(BackgroundServer {
            addr: local_addr,
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// A server running on its own thread; dropping it shuts it down.
#[derive(Debug)]
pub struct BackgroundServer {
    addr: SocketAddr,
    handle: ServerHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl BackgroundServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stats and shutdown.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Current counters.
    pub fn stats(&self) -> ServerStats {
        self.handle.stats()
    }

    /// Graceful shutdown; waits for the server thread.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
