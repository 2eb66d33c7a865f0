//! What rowstream refuses on a PostgreSQL tenant before PostgreSQL sees the
//! query, and why.
//!
//! PostgreSQL itself refuses, inside `READ ONLY` transactions, every
//! statement and function that writes: DML, DDL, writable CTEs
//! (`WITH d AS (DELETE …) SELECT …`), `nextval`/`setval`, `NOTIFY` and
//! `pg_notify`, `LISTEN` and `COPY … FROM`; privileges refuse the rest a
//! SELECT-only role may not do. Utility statements (`SET`, `SET ROLE`,
//! `DO`, `CALL`, `COPY … TO`, `LISTEN`) return no row description or cannot
//! be opened as a cursor, so the statement gate refuses them too. Two
//! statements are refused by the extended protocol's parser.
//!
//! What a read-only transaction still allows, and what must not run on the
//! read path, is refused here, by name, at the token level (never by
//! substring: a string literal or a comment naming them is fine):
//!
//! - functions that change the session beyond the transaction
//!   (`set_config(…, false)`, session advisory locks);
//! - `pg_notify` (a read-only transaction queues the notification; it would
//!   only be dropped because the transaction never commits);
//! - functions that act on other sessions or the server
//!   (`pg_terminate_backend`, `pg_cancel_backend`, `pg_reload_conf`, WAL
//!   and replication control, large-object writes, `dblink`).
//!
//! Every session is also rolled back and `DISCARD ALL`ed before it is
//! pooled again, so nothing a statement did to the session outlives it.

use crate::core::protocol::{ErrorBody, ErrorCode};
use crate::core::resumable::{
    assess_resumability_in, tokenize_in, Dialect, Resumability, TokenKind,
};

/// Functions refused on the read path (lower case; prefixes end in `*`).
const REFUSED_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_promote",
    "pg_wal_replay_*",
    "pg_create_*_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_origin_*",
    "pg_logical_emit_message",
    "pg_stat_reset*",
    "pg_file_*",
    "pg_export_snapshot",
    "pg_import_system_collations",
    "lo_*",
    "lowrite",
    "dblink*",
    "pg_notify",
    "txid_current",
    "pg_current_xact_id",
];

/// First keywords of statements that are not queries (anything else goes on
/// to PostgreSQL's parser, which decides).
const NOT_QUERIES: &[&str] = &[
    "abort",
    "alter",
    "analyze",
    "begin",
    "call",
    "checkpoint",
    "close",
    "cluster",
    "comment",
    "commit",
    "copy",
    "create",
    "deallocate",
    "declare",
    "delete",
    "discard",
    "do",
    "drop",
    "end",
    "execute",
    "explain",
    "fetch",
    "grant",
    "import",
    "insert",
    "listen",
    "load",
    "lock",
    "merge",
    "move",
    "notify",
    "prepare",
    "reassign",
    "refresh",
    "reindex",
    "release",
    "reset",
    "revoke",
    "rollback",
    "savepoint",
    "security",
    "set",
    "show",
    "start",
    "truncate",
    "unlisten",
    "update",
    "vacuum",
];

fn refused(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    REFUSED_FUNCTIONS.iter().any(|f| match f.split_once('*') {
        Some((pre, post)) => {
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
        None => name == *f,
    })
}

fn unsupported(why: String) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::StreamUnsupportedStatement,
        format!("only a single read-only query can be streamed: {why}"),
    )
}

/// rowstream's own refusals (see the module docs). A query the tokenizer
/// cannot read goes on to PostgreSQL, whose parser reports it.
pub(crate) fn check(query: &str) -> Result<(), ErrorBody> {
    if query.contains('\0') {
        return Err(ErrorBody::new(
            ErrorCode::QueryError,
            "the query contains a NUL character",
        ));
    }
    let Ok(tokens) = tokenize_in(query, Dialect::Postgres) else {
        return Ok(());
    };
    let first = tokens
        .iter()
        .find(|t| t.kind != TokenKind::LeftParen)
        .map(|t| t.unquoted().to_ascii_lowercase());
    match first {
        None => return Err(ErrorBody::new(ErrorCode::QueryError, "the query is empty")),
        Some(w) if NOT_QUERIES.contains(&w.as_str()) => {
            return Err(unsupported(format!(
                "a {} statement is not a query",
                w.to_ascii_uppercase()
            )))
        }
        Some(_) => {}
    }
    for pair in tokens.windows(2) {
        if pair[0].kind == TokenKind::Word
            && pair[1].kind == TokenKind::LeftParen
            && refused(&pair[0].unquoted())
        {
            return Err(unsupported(format!(
                "{}() changes the session or the server",
                pair[0].unquoted()
            )));
        }
    }
    Ok(())
}

/// Looks up a table's primary-key columns: `(schema, table)`.
pub(crate) type PrimaryKeyOf<'a> = dyn Fn(Option<&str>, &str) -> Option<Vec<String>> + 'a;

/// The classifier's verdict for a PostgreSQL query: resumable when it reads
/// one table in its primary-key order. The key is looked up for the table
/// the query names (schema-qualified or through the search path).
pub(crate) fn resumability(query: &str, primary_key: &PrimaryKeyOf<'_>) -> Resumability {
    let r = assess_resumability_in(query, Dialect::Postgres, &|table| primary_key(None, table));
    match (&r.schema, &r.table) {
        (Some(schema), Some(table)) => {
            let key = primary_key(Some(schema), table);
            assess_resumability_in(query, Dialect::Postgres, &|_| key.clone())
        }
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_session_changing_functions_but_not_their_names_in_text() {
        for q in [
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT PG_TERMINATE_BACKEND(pid) FROM pg_stat_activity",
            "SELECT 1 WHERE pg_try_advisory_lock_shared(2)",
            "SELECT lo_unlink(1)",
        ] {
            let e = check(q).unwrap_err();
            assert_eq!(e.code, "stream_unsupported_statement", "{q}");
        }
        for q in [
            "SELECT 'set_config(' AS a",
            "SELECT 1 -- pg_advisory_lock(1)",
            "SELECT pg_sleep(0.1), now()",
            "WITH t AS (SELECT 1 AS x) SELECT * FROM t",
            "(SELECT 1) UNION ALL (SELECT 2)",
            "VALUES (1)",
            "TABLE pg_class",
        ] {
            check(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        }
        for q in [
            "SET ROLE postgres",
            "DO $$ BEGIN END $$",
            "CALL p()",
            "LISTEN x",
            "COPY t TO STDOUT",
        ] {
            assert_eq!(
                check(q).unwrap_err().code,
                "stream_unsupported_statement",
                "{q}"
            );
        }
    }
}
