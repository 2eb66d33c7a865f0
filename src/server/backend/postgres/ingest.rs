//! Uploads into a PostgreSQL tenant (`POST /v1/ingest/stream`), through the
//! tenant's writer role (`--tenant-writer NAME=URL`, a role with INSERT on
//! the target tables; the stream path never uses it).
//!
//! One transaction per upload: rows are inserted in batches
//! (`INSERT … SELECT … FROM json_populate_recordset(NULL::t, $1)`, so
//! PostgreSQL converts each JSON value to its column's type) and committed
//! only after the `end` line verified. A digest mismatch, a malformed line,
//! a disconnect or a crash of the server leaves the table exactly as before:
//! the transaction is rolled back, or dies with its connection.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use super::{parse_lsn, quote_ident, PgTenant};
use crate::core::ingest::IngestValue;
use crate::core::protocol::{ErrorBody, ErrorCode};
use crate::server::ingest::IngestTarget;
use crate::server::stream::Refusal;

/// Rows per `INSERT`.
const BATCH_ROWS: usize = 1000;
/// Bytes of JSON per `INSERT`.
const BATCH_BYTES: usize = 1 << 20;

/// The writer of one upload.
pub(crate) struct PgTarget {
    client: Arc<Client>,
    rt: Handle,
    task: tokio::task::JoinHandle<()>,
    tenant: Arc<PgTenant>,
    insert: Option<(Statement, Statement, Vec<String>)>,
    batch: Vec<(u64, serde_json::Map<String, serde_json::Value>)>,
    batch_bytes: usize,
}

impl Drop for PgTarget {
    fn drop(&mut self) {
        // Closing the connection rolls back whatever is still open.
        self.task.abort();
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::InternalError, format!("database failure: {e}"))
}

impl PgTarget {
    /// Connects as the tenant's writer role.
    pub(crate) fn connect(tenant: &Arc<PgTenant>) -> Result<PgTarget, Refusal> {
        let Some(config) = tenant.writer.clone() else {
            return Err(Refusal::new(
                ErrorCode::IngestNotAllowed,
                "this tenant accepts no uploads (no --tenant-writer role is configured)",
            ));
        };
        let rt = Handle::try_current().map_err(internal)?;
        let (client, conn) = rt.block_on(config.connect(NoTls)).map_err(internal)?;
        let task = rt.spawn(async move {
            let _ = conn.await;
        });
        Ok(PgTarget {
            client: Arc::new(client),
            rt,
            task,
            tenant: tenant.clone(),
            insert: None,
            batch: Vec::new(),
            batch_bytes: 0,
        })
    }

    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        let c = self.client.clone();
        self.rt.block_on(async move { f(&c).await })
    }

    /// Inserts the pending batch; a refused batch is replayed row by row
    /// (each in a savepoint) to name the line the table refused.
    fn flush(&mut self) -> Result<(), Refusal> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let Some((many, one, _)) = self.insert.clone() else {
            return Err(internal("rows before open"));
        };
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let json = serde_json::Value::Array(
            batch
                .iter()
                .map(|(_, m)| serde_json::Value::Object(m.clone()))
                .collect(),
        );
        let r = self.run(async |c: &Client| {
            c.batch_execute("SAVEPOINT rowstream_batch").await?;
            c.execute(&many, &[&json]).await
        });
        let Err(batch_error) = r else {
            return self
                .run(async |c: &Client| c.batch_execute("RELEASE SAVEPOINT rowstream_batch").await)
                .map_err(internal);
        };
        let _ = self.run(async |c: &Client| {
            c.batch_execute("ROLLBACK TO SAVEPOINT rowstream_batch")
                .await
        });
        for (line, row) in &batch {
            let one_json = serde_json::Value::Array(vec![serde_json::Value::Object(row.clone())]);
            let r = self.run(async |c: &Client| {
                c.batch_execute("SAVEPOINT rowstream_row").await?;
                c.execute(&one, &[&one_json]).await
            });
            if let Err(e) = r {
                return Err(row_refusal(&e, *line));
            }
            let _ = self
                .run(async |c: &Client| c.batch_execute("RELEASE SAVEPOINT rowstream_row").await);
        }
        Err(row_refusal(&batch_error, batch.first().map_or(0, |b| b.0)))
    }
}

/// A refused row: data and constraint errors are the row's fault
/// (`invalid_row` with its line), anything else the server's.
fn row_refusal(e: &tokio_postgres::Error, line: u64) -> Refusal {
    match e.as_db_error() {
        Some(db) if db.code().code().starts_with("22") || db.code().code().starts_with("23") => {
            Refusal::from_body(
                ErrorBody::new(
                    ErrorCode::InvalidRow,
                    format!("line {line}: the table refused the row: {}", db.message()),
                )
                .with("line", line),
            )
        }
        Some(db) if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE => Refusal::new(
            ErrorCode::IngestNotAllowed,
            format!("the writer role may not insert here: {}", db.message()),
        ),
        _ => internal(e),
    }
}

impl IngestTarget for PgTarget {
    fn runtime_config(&mut self) -> BTreeMap<String, String> {
        self.run(async |c: &Client| super::read_runtime_config(c).await)
            .unwrap_or_default()
    }

    fn table(&mut self, table: &str) -> Result<Option<String>, Refusal> {
        // An ordinary (or partitioned) table on the search path, by its
        // exact name, else case-insensitively; the server's own tables are
        // not targets.
        let rows = self
            .run(async |c: &Client| {
                c.query(
                    "SELECT c.oid::regclass::text, c.relname::text FROM pg_class c \
                     WHERE c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid) \
                     AND lower(c.relname) = lower($1) \
                     ORDER BY c.relname = $1 DESC LIMIT 1",
                    &[&table],
                )
                .await
            })
            .map_err(internal)?;
        Ok(rows
            .first()
            .filter(|r| !r.get::<_, String>(1).starts_with("rowstream_"))
            .map(|r| r.get(0)))
    }

    fn columns(&mut self, table: &str) -> Result<Vec<String>, Refusal> {
        self.run(async |c: &Client| {
            c.query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
                 AND attidentity <> 'a' ORDER BY attnum",
                &[&table],
            )
            .await
        })
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .map_err(internal)
    }

    fn lsn(&mut self) -> Result<u64, Refusal> {
        self.run(async |c: &Client| c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await)
            .map(|r| parse_lsn(&r.get::<_, String>(0)))
            .map_err(internal)
    }

    fn begin(&mut self, table: &str, columns: &[String]) -> Result<(), Refusal> {
        let cols = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        // `table` is the regclass text PostgreSQL printed (quoted as needed).
        let sql = format!(
            "INSERT INTO {table} ({cols}) SELECT {cols} FROM \
             json_populate_recordset(NULL::{table}, $1::json)"
        );
        let (many, one) = self
            .run(async |c: &Client| {
                c.batch_execute("BEGIN").await?;
                let many = c.prepare(&sql).await?;
                let one = c.prepare(&sql).await?;
                Ok((many, one))
            })
            .map_err(|e| row_refusal(&e, 1))?;
        self.insert = Some((many, one, columns.to_vec()));
        let _ = &self.tenant;
        Ok(())
    }

    fn row(&mut self, values: &[IngestValue], line_no: u64) -> Result<(), Refusal> {
        let Some((_, _, columns)) = &self.insert else {
            return Err(internal("row before open"));
        };
        let mut row = serde_json::Map::with_capacity(columns.len());
        for (c, v) in columns.iter().zip(values) {
            let v = match v {
                IngestValue::Null => serde_json::Value::Null,
                IngestValue::Integer(i) => serde_json::Value::from(*i),
                IngestValue::Real(f) => serde_json::Value::from(*f),
                IngestValue::Text(s) => {
                    self.batch_bytes += s.len();
                    serde_json::Value::from(s.as_str())
                }
            };
            self.batch_bytes += 16;
            row.insert(c.clone(), v);
        }
        self.batch.push((line_no, row));
        if self.batch.len() >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Refusal> {
        self.flush()?;
        self.run(async |c: &Client| c.batch_execute("COMMIT").await)
            .map_err(internal)
    }

    fn rollback(&mut self) {
        let _ = self.run(async |c: &Client| c.batch_execute("ROLLBACK").await);
    }
}
