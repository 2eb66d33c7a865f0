//! `rowstream serve`: the reference server; `rowstream export` (feature
//! `client`): a query result into a verified, resumable file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use rowstream::core::audit::{AuditSink, JsonLinesAuditSink};
use rowstream::core::config::{StreamConfig, KEYS};
use rowstream::server::ingest::{DEFAULT_INGEST_IDLE_TIMEOUT, DEFAULT_INGEST_MAX_LINE_BYTES};
use rowstream::server::limits::{
    QueryLimits, DEFAULT_HEADER_READ_TIMEOUT_MS, DEFAULT_QUERY_MAX_STEP_MS,
    DEFAULT_QUERY_MAX_VALUE_BYTES, DEFAULT_REQUEST_BODY_TIMEOUT_MS,
};
use rowstream::server::{IngestMode, Server};

#[derive(Parser, Debug)]
#[command(
    name = "rowstream",
    version,
    about = "Stream SQLite query results as verified, resumable NDJSON (PROTOCOL.md v1).",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve POST /v1/query/stream, POST /v1/query/stream/cancel and POST /v1/ingest/stream.
    #[command(after_long_help = after_help())]
    Serve(ServeArgs),
    /// Download a query result to a file (NDJSON or CSV), verified against the stream's
    /// digest and resumable after a crash, Ctrl+C or a dropped connection.
    #[cfg(feature = "client")]
    #[command(after_long_help = export_cmd::AFTER_HELP)]
    Export(export_cmd::ExportArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Database served as tenant `default`: a `postgres://` / `postgresql://` URL (libpq
    /// syntax; password in the URL, PGPASSWORD or ~/.pgpass), or a SQLite file (created if
    /// missing; switched to WAL).
    #[arg(long, value_name = "URL|PATH")]
    db: Option<PathBuf>,

    /// Serve another tenant from its own database (URL or SQLite file). Repeatable; SQLite
    /// and PostgreSQL tenants can be mixed.
    #[arg(long = "tenant", value_name = "NAME=URL|PATH", value_parser = parse_tenant)]
    tenants: Vec<(String, PathBuf)>,

    /// The PostgreSQL role a tenant accepts uploads through (INSERT on the target tables; the
    /// stream path never uses it). Without it, uploads to that PostgreSQL tenant answer
    /// 403 ingest_not_allowed. Repeatable.
    #[arg(long = "tenant-writer", value_name = "NAME=URL", value_parser = parse_tenant)]
    tenant_writers: Vec<(String, PathBuf)>,

    /// PostgreSQL database holding the state every instance started with the same value
    /// shares (cursors, checkpoints, tombstones, capacity slots): they act as one server.
    #[arg(
        long,
        env = "ROWSTREAM_CLUSTER",
        value_name = "URL",
        hide_env_values = true
    )]
    cluster: Option<String>,

    /// This instance's name in audit events, /v1/debug/stats and the cluster (default: random).
    #[arg(long, value_name = "NAME")]
    instance_id: Option<String>,

    /// How long a vanished instance's capacity slots stay counted before the others reclaim
    /// them (heartbeats every quarter of it).
    #[arg(long, default_value_t = rowstream::server::DEFAULT_CLUSTER_LEASE_MS, value_name = "MS")]
    cluster_lease_ms: u64,

    /// Accept PostgreSQL tenant roles that are superusers or have BYPASSRLS (refused by
    /// default: stream as a SELECT-only role).
    #[arg(long)]
    allow_privileged_role: bool,

    /// Address to listen on (HOST:PORT); port 0 picks a free port (the real address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,

    /// Static bearer token mapped to a tenant and principal. Repeatable.
    #[arg(long = "token", value_name = "TOKEN=TENANT:PRINCIPAL", value_parser = parse_token)]
    tokens: Vec<(String, String, String)>,

    /// Accept HS256 JWTs signed with this secret (`sub` = principal, `tenant` claim = tenant, `exp` enforced).
    #[arg(
        long,
        env = "ROWSTREAM_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,

    /// Boot-time stream.* value (a tenant's rowstream_config table overrides it). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    settings: Vec<(String, String)>,

    /// Audit log file (JSON lines, appended). Default: stderr.
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,

    /// Content-Encoding of streamed responses: `on` (zstd, br or gzip, as the client's
    /// Accept-Encoding allows) or `off` (always identity).
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = parse_on_off)]
    compression: bool,

    /// zstd level of compressed streams (1 fast … 19 small).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: i32,

    /// brotli quality of compressed streams (0 fast … 11 small).
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=11))]
    brotli_quality: u32,

    /// gzip level of compressed streams (1 fast … 9 small).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=9))]
    gzip_level: u32,

    /// Serve the files of this directory at / (for example the demo's www/).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,

    /// How POST /v1/ingest/stream is made atomic: `staged` (rows staged in a private temp
    /// table, copied in one short write transaction after the end line verified) or `direct`
    /// (one write transaction for the whole upload).
    #[arg(long, default_value = "staged", value_name = "MODE", value_parser = parse_ingest_mode)]
    ingest_mode: IngestMode,

    /// Longest line accepted in an input stream (413 line_too_long past it).
    #[arg(long, default_value_t = DEFAULT_INGEST_MAX_LINE_BYTES, value_name = "BYTES")]
    ingest_max_line_bytes: usize,

    /// Largest input-stream body (413 payload_too_large past it). Default: no limit.
    #[arg(long, value_name = "BYTES")]
    ingest_max_body_bytes: Option<u64>,

    /// Longest wait for the next piece of an upload (408 request_timeout, nothing written).
    #[arg(long, default_value_t = DEFAULT_INGEST_IDLE_TIMEOUT.as_millis() as u64, value_name = "MS")]
    ingest_idle_timeout_ms: u64,

    /// Longest a streamed query may compute without producing a row (error line
    /// resource_limit_exceeded); 0 = only the snapshot TTL bounds it.
    #[arg(long, default_value_t = DEFAULT_QUERY_MAX_STEP_MS, value_name = "MS")]
    query_max_step_ms: u64,

    /// Largest string/blob/row a streamed query may build (SQLITE_LIMIT_LENGTH;
    /// error line resource_limit_exceeded).
    #[arg(long, default_value_t = DEFAULT_QUERY_MAX_VALUE_BYTES, value_name = "BYTES")]
    query_max_value_bytes: usize,

    /// Longest wait for a whole JSON request body of the query/cancel routes
    /// (408 request_timeout; slowloris bodies).
    #[arg(long, default_value_t = DEFAULT_REQUEST_BODY_TIMEOUT_MS, value_name = "MS")]
    request_body_timeout_ms: u64,

    /// Longest time a client may take to send a request head (slowloris);
    /// the connection is closed past it.
    #[arg(long, default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS, value_name = "MS")]
    header_read_timeout_ms: u64,
}

fn parse_ingest_mode(s: &str) -> Result<IngestMode, String> {
    IngestMode::parse(s).ok_or_else(|| "expected `staged` or `direct`".to_string())
}

fn after_help() -> String {
    let d = StreamConfig::default();
    let keys: Vec<String> = KEYS
        .iter()
        .map(|k| format!("  {k:<34} default {}", d.value_of(k).unwrap_or_default()))
        .collect();
    format!(
        "Authentication:\n  With no --token and no --jwt-secret the server is OPEN: every caller is principal\n  `anonymous` in tenant `default`. Otherwise requests need `Authorization: Bearer <token>`.\n  The tenant always comes from the server's configuration, never from a request header.\n\n\
Configuration keys (--set KEY=VALUE, or rows of `rowstream_config(key TEXT PRIMARY KEY, value)`\n  in a tenant database, read when a stream opens and frozen for it):\n{}\n\n\
Endpoints:\n  POST /v1/query/stream          {{\"query\":\"SELECT ...\",\"params\":[...],\"shape\":\"object\"|\"array\"}}\n                                 or {{\"cursor\":\"...\",\"after_rows\":N,\"prefix_hash\":\"...\"}}\n  POST /v1/query/stream/cancel   {{\"cursor\":\"...\"}}\n  POST /v1/ingest/stream         NDJSON: {{\"open\":{{\"table\":\"t\",\"columns\":[...],\"verify\":\"sha256\"}}}}, {{\"row\":{{...}}}}..., {{\"end\":{{\"sha256\":\"...\"}}}}\n                                 (all rows land or none; answer {{\"end\":{{\"row_count\":N,...}}}})\n  GET  /v1/debug/stats           pinned snapshots, running streams, slots, cursors\n\n\
Values: INTEGER exact, REAL as JSON numbers (NaN/Infinity as null), TEXT as strings,\n  BLOB as base64 strings, NULL as null. Only single read-only queries are streamed.\n\n\
Shutdown: SIGINT/SIGTERM end running streams (`end` reason cancelled) and exit.\n\n\
Example:\n  rowstream serve --db app.sqlite --listen 127.0.0.1:0 --token s3cret=default:alice \\\n    --set stream.snapshot.ttl_ms=30000 --audit-log audit.jsonl",
        keys.join("\n")
    )
}

fn parse_tenant(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=PATH".to_string())?;
    if name.is_empty() || path.is_empty() {
        return Err("expected NAME=PATH".into());
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_token(s: &str) -> Result<(String, String, String), String> {
    let (token, rest) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected TOKEN=TENANT:PRINCIPAL".to_string())?;
    let (tenant, principal) = rest
        .split_once(':')
        .ok_or_else(|| "expected TOKEN=TENANT:PRINCIPAL".to_string())?;
    if token.is_empty() || tenant.is_empty() || principal.is_empty() {
        return Err("expected TOKEN=TENANT:PRINCIPAL".into());
    }
    Ok((token.into(), tenant.into(), principal.into()))
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE".to_string())?;
    if !KEYS.contains(&k) {
        return Err(format!(
            "unknown key {k:?}; known keys: {}",
            KEYS.join(", ")
        ));
    }
    Ok((k.into(), v.into()))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Without feature `client` serving is the only command.
    #[cfg_attr(not(feature = "client"), allow(clippy::infallible_destructuring_match))]
    let args = match cli.command {
        Command::Serve(args) => args,
        #[cfg(feature = "client")]
        Command::Export(args) => return export_cmd::main(args),
    };
    init_logs();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rowstream: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Request and lifecycle logs on stderr, filtered by `RUST_LOG` (default
/// `info`; e.g. `RUST_LOG=rowstream::http=warn,rowstream::stream=debug`).
fn init_logs() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut b = Server::builder();
    if let Some(db) = args.db {
        b = b.db(db);
    }
    for (name, path) in args.tenants {
        b = b.tenant(name, path);
    }
    for (name, url) in args.tenant_writers {
        b = b.tenant_writer(name, url.to_string_lossy());
    }
    for (token, tenant, principal) in args.tokens {
        b = b.token(token, tenant, principal);
    }
    if let Some(secret) = args.jwt_secret.filter(|s| !s.is_empty()) {
        b = b.jwt_secret(secret.into_bytes());
    }
    for (k, v) in args.settings {
        b = b.set(k, v);
    }
    if let Some(url) = args.cluster.clone().filter(|u| !u.is_empty()) {
        b = b.cluster(url);
    }
    // Named in every audit event whenever it is given or instances share
    // state (PROTOCOL §6).
    let instance = args.instance_id.clone().or_else(|| {
        args.cluster
            .as_ref()
            .map(|_| rowstream::core::token::random_hex::<4>().unwrap_or_default())
    });
    if let Some(id) = &instance {
        b = b.instance_id(id.clone());
    }
    b = b
        .compression(rowstream::server::compress::Compression {
            enabled: args.compression,
            zstd_level: args.zstd_level,
            brotli_quality: args.brotli_quality,
            gzip_level: args.gzip_level,
        })
        .cluster_lease_ms(args.cluster_lease_ms)
        .allow_privileged_role(args.allow_privileged_role)
        .ingest_mode(args.ingest_mode)
        .ingest_max_line_bytes(args.ingest_max_line_bytes)
        .ingest_max_body_bytes(args.ingest_max_body_bytes)
        .ingest_idle_timeout(std::time::Duration::from_millis(
            args.ingest_idle_timeout_ms,
        ))
        .query_limits(QueryLimits {
            max_step_ms: args.query_max_step_ms,
            max_value_bytes: args.query_max_value_bytes,
            request_body_timeout_ms: args.request_body_timeout_ms,
            header_read_timeout_ms: args.header_read_timeout_ms,
        });
    if let Some(dir) = args.static_dir {
        b = b.static_dir(dir);
    }
    if let Some(path) = &args.audit_log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("audit log {}: {e}", path.display()))?;
        let sink = JsonLinesAuditSink::new(file);
        let sink: Arc<dyn AuditSink> = Arc::new(match &instance {
            Some(id) => sink.with_instance(id.clone()),
            None => sink,
        });
        b = b.audit_sink(sink);
    }
    let server = b.build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr()?;
        if server.is_open() {
            tracing::warn!(
                "no --token or --jwt-secret configured: this server is OPEN, every caller is `anonymous`"
            );
        }
        tracing::info!(%addr, instance = instance.as_deref().unwrap_or("-"), cluster = args.cluster.is_some(), "listening");
        println!("listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.serve(listener, shutdown_signal()).await?;
        tracing::info!("shut down");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(feature = "client")]
mod export_cmd {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use clap::{Args, ValueEnum};
    use rowstream::client::export::{self, ExportOptions, Format};
    use rowstream::client::{Count, RetryPolicy, Shape};

    #[derive(Args, Debug)]
    pub struct ExportArgs {
        /// Base URL of the server, e.g. http://127.0.0.1:8080 (http:// only).
        #[arg(long, value_name = "URL")]
        server: String,

        /// The SQL query (one read-only statement).
        #[arg(long, value_name = "SQL")]
        query: String,

        /// Query parameters: a JSON array (positional) or object (named).
        #[arg(long, value_name = "JSON", value_parser = parse_params)]
        params: Option<serde_json::Value>,

        /// Row shape asked of the server (and written to NDJSON).
        #[arg(long, value_enum, default_value = "object")]
        shape: ShapeArg,

        /// Output format.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: FormatArg,

        /// Bearer token.
        #[arg(
            long,
            env = "ROWSTREAM_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,

        /// Output file; without it rows go to stdout (no resume across runs then).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,

        /// Start over when the partial export cannot be resumed (cursor expired or unknown,
        /// snapshot gone, server restarted, partial file of another export).
        #[arg(long)]
        restart: bool,

        /// No progress and no summary line on stderr (errors are still printed).
        #[arg(long)]
        quiet: bool,

        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,

        /// Ask the server for a total for the progress percentage and ETA (PROTOCOL 1.1; a
        /// server without it is asked again without the field).
        #[arg(long, value_enum, default_value = "estimated")]
        count: CountArg,

        /// Retries in a row without a new row before giving up (exit code 5).
        #[arg(long, default_value_t = 5, value_name = "N")]
        max_retries: u32,
    }

    #[derive(Clone, Copy, Debug, ValueEnum)]
    enum ShapeArg {
        Object,
        Array,
    }

    #[derive(Clone, Copy, Debug, ValueEnum)]
    enum FormatArg {
        Ndjson,
        Csv,
    }

    #[derive(Clone, Copy, Debug, ValueEnum)]
    enum CountArg {
        None,
        Estimated,
        Exact,
    }

    fn parse_params(s: &str) -> Result<serde_json::Value, String> {
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
        if v.is_array() || v.is_object() {
            Ok(v)
        } else {
            Err("expected a JSON array or object".into())
        }
    }

    pub const AFTER_HELP: &str = "\
Files:
  Rows are written to FILE.partial; FILE.partial.state records the cursor, the complete rows
  and bytes written and the digest state after every network chunk. FILE appears (renamed from
  FILE.partial) only once the stream's end line matched the digest of every row. Running the same
  command again after a crash, kill -9, Ctrl+C or a lost connection truncates FILE.partial to the
  last recorded row and resumes the server cursor from there (within the cursor's TTL). Dropped
  connections are resumed within a run too (backoff, Retry-After).

Formats:
  ndjson  one row value per line, byte for byte as the server sent it ({...} or [...]).
  csv     RFC 4180 (CRLF, quoted when needed), a header row of the column names. NULL is an
          empty field, an empty string is \"\"; text is written unmodified; numbers, booleans
          and nested JSON as the server's JSON text; BLOBs as the server's base64 text.
          Formula-like values (=, +, -, @ ...) are NOT escaped: do not open untrusted results
          in a spreadsheet without care.

Exit codes:
  0  complete and verified (FILE written)
  1  usage or I/O error (FILE exists without --force, bad --params, disk full ...)
  2  invalid command line
  3  the server refused (any 4xx, 401 included, or an in-band error); its code is printed
  4  digest mismatch: the rows did not verify; FILE is not written, the partial files removed
  5  interrupted (connection lost and retries ran out, 5xx, Ctrl+C): run it again to resume
  6  cannot resume: the cursor expired or is unknown (e.g. a restarted server), the snapshot is
     gone, the query is not resumable, or the partial file is of another export; --restart
     starts over

Example:
  rowstream export --server http://127.0.0.1:8080 --query 'SELECT * FROM t' \\
    --format csv -o t.csv";

    pub fn main(args: ExportArgs) -> ExitCode {
        let opts = ExportOptions {
            server: args.server,
            token: args.token.filter(|t| !t.is_empty()),
            query: args.query,
            params: args.params,
            shape: match args.shape {
                ShapeArg::Object => Shape::Object,
                ShapeArg::Array => Shape::Array,
            },
            format: match args.format {
                FormatArg::Ndjson => Format::Ndjson,
                FormatArg::Csv => Format::Csv,
            },
            output: args.output,
            restart: args.restart,
            force: args.force,
            quiet: args.quiet,
            count: match args.count {
                CountArg::None => Count::None,
                CountArg::Estimated => Count::Estimated,
                CountArg::Exact => Count::Exact,
            },
            retry: RetryPolicy {
                max_retries: args.max_retries,
                ..RetryPolicy::default()
            },
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("rowstream: cannot start: {e}");
                return ExitCode::from(export::EXIT_FAILURE);
            }
        };
        match rt.block_on(export::run(&opts)) {
            Ok(_) => ExitCode::from(export::EXIT_OK),
            Err(e) => {
                let code = e.exit_code();
                let text = e.to_string();
                eprintln!("rowstream: {text}");
                if code == export::EXIT_NOT_RESUMABLE && !text.contains("--restart") {
                    eprintln!("rowstream: the partial export cannot be resumed; pass --restart to start over");
                } else if code == export::EXIT_INTERRUPTED
                    && opts.output.is_some()
                    && !text.contains("again")
                {
                    eprintln!(
                        "rowstream: the partial file is kept; run the same command again to resume"
                    );
                }
                ExitCode::from(code)
            }
        }
    }
}
