//! The rowid rewrite that makes resumes start near their row instead of
//! re-scanning the prefix.
//!
//! A resumable query (PROTOCOL §2.5) is a single-table `SELECT` in rowid
//! order. The server runs it as
//!
//! ```sql
//! SELECT <projection>, <rowid> AS "__rowstream_rowid" FROM t
//!   WHERE (<where>) AND <rowid> > :checkpoint   -- only when resuming
//!   ORDER BY <user's rowid order, or "__rowstream_rowid">
//! ```
//!
//! The hidden last column gives the rowid of every row that goes out, so a
//! checkpoint is `(rows sent, last rowid, digest state)`; a resume restarts
//! from the nearest checkpoint with a rowid predicate. The rewrite splices
//! text at token boundaries found by the core tokenizer (never substring
//! matching), and the result goes through the same read-only gate as the
//! client's SQL. Whenever anything is unusual (a `LIMIT`, a `WITH`, a shadowed
//! rowid name, a `WITHOUT ROWID` table...) the server falls back to running
//! the query unchanged and skipping rows on resume. With `LIMIT`/`OFFSET`
//! the rewrite only adds the hidden column and the rowid order; resumes skip.

use crate::core::resumable::{tokenize, TokenKind};

/// Name of the hidden rowid column.
pub const HIDDEN_ROWID: &str = "\"__rowstream_rowid\"";

/// The pieces of a rowid-ordered single-table query, as byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowidPlan {
    sql: String,
    /// Where the hidden projection is inserted (the `FROM` keyword).
    from_at: usize,
    /// After the `WHERE` keyword, if any.
    where_after: Option<usize>,
    /// End of the filtering part: the first of `ORDER`, `LIMIT`, `;` or the
    /// end. The predicate closes and a missing `ORDER BY` goes here.
    tail_at: usize,
    has_order_by: bool,
    has_limit: bool,
    rowid_name: &'static str,
}

impl RowidPlan {
    /// Analyses `sql` (already classified resumable). `columns` are the
    /// table's column names, to avoid a shadowed rowid name.
    pub fn new(sql: &str, columns: &[String]) -> Option<RowidPlan> {
        let rowid_name = ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|n| !columns.iter().any(|c| c.eq_ignore_ascii_case(n)))?;
        let tokens = tokenize(sql).ok()?;
        let mut depth = 0i32;
        let mut select_seen = false;
        let mut from_at = None;
        let mut where_after = None;
        let mut order_at = None;
        let mut limit_at = None;
        let mut end_at = sql.len();
        for t in &tokens {
            match t.kind {
                TokenKind::LeftParen => depth += 1,
                TokenKind::RightParen => depth -= 1,
                TokenKind::Semicolon if depth == 0 => {
                    end_at = t.offset;
                    break;
                }
                TokenKind::Word if depth == 0 => {
                    if !select_seen {
                        if !t.is_keyword("select") {
                            return None;
                        }
                        select_seen = true;
                    } else if from_at.is_none() {
                        if t.is_keyword("from") {
                            from_at = Some(t.offset);
                        }
                    } else if t.is_keyword("where") {
                        if where_after.is_some() || order_at.is_some() || limit_at.is_some() {
                            return None;
                        }
                        where_after = Some(t.offset + t.text.len());
                    } else if t.is_keyword("order") {
                        if order_at.is_some() || limit_at.is_some() {
                            return None;
                        }
                        order_at = Some(t.offset);
                    } else if t.is_keyword("limit") {
                        limit_at.get_or_insert(t.offset);
                    } else if [
                        "group",
                        "having",
                        "window",
                        "union",
                        "except",
                        "intersect",
                        "select",
                        "values",
                    ]
                    .iter()
                    .any(|k| t.is_keyword(k))
                    {
                        return None;
                    }
                }
                _ => {}
            }
        }
        let from_at = from_at?;
        let tail_at = order_at.or(limit_at).unwrap_or(end_at);
        Some(RowidPlan {
            sql: sql.to_owned(),
            from_at,
            where_after,
            tail_at,
            has_order_by: order_at.is_some(),
            has_limit: limit_at.is_some(),
            rowid_name,
        })
    }

    /// Whether a resume may restart at a rowid. With `LIMIT`/`OFFSET` the
    /// predicate would change which rows the limit counts, so such queries
    /// keep the rowid order but resume by skipping rows.
    pub fn seeks(&self) -> bool {
        !self.has_limit
    }

    /// The query with the hidden rowid column, rowid order, and — when
    /// `after_rowid` is given — the predicate `rowid > after_rowid`. Spliced
    /// pieces are separated by newlines, so a `--` comment in the client's
    /// SQL can never swallow them.
    pub fn sql(&self, after_rowid: Option<i64>) -> String {
        let after_rowid = after_rowid.filter(|_| self.seeks());
        let s = &self.sql;
        let (from, tail) = (self.from_at, self.tail_at);
        let mut out = String::with_capacity(s.len() + 96);
        out.push_str(&s[..from]);
        out.push_str(&format!("\n, {} AS {HIDDEN_ROWID}\n", self.rowid_name));
        match (self.where_after, after_rowid) {
            (Some(w), Some(r)) => {
                out.push_str(&s[from..w]);
                out.push_str(" (");
                out.push_str(&s[w..tail]);
                out.push_str(&format!("\n) AND {} > {r}\n", self.rowid_name));
            }
            (None, Some(r)) => {
                out.push_str(&s[from..tail]);
                out.push_str(&format!("\nWHERE {} > {r}\n", self.rowid_name));
            }
            (_, None) => {
                out.push_str(&s[from..tail]);
                out.push('\n');
            }
        }
        if !self.has_order_by {
            out.push_str("ORDER BY ");
            out.push_str(HIDDEN_ROWID);
            out.push('\n');
        }
        // (`tail` starts at the user's ORDER BY, LIMIT, `;` or the end.)
        out.push_str(&s[tail..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn rewrites_at_token_boundaries() {
        let p = RowidPlan::new("SELECT a, 'from' AS f FROM t WHERE b = 1 OR c = 2", &[]).unwrap();
        assert_eq!(
            norm(&p.sql(None)),
            "SELECT a, 'from' AS f , rowid AS \"__rowstream_rowid\" FROM t WHERE b = 1 OR c = 2 ORDER BY \"__rowstream_rowid\""
        );
        assert_eq!(
            norm(&p.sql(Some(41))),
            "SELECT a, 'from' AS f , rowid AS \"__rowstream_rowid\" FROM t WHERE ( b = 1 OR c = 2 ) AND rowid > 41 ORDER BY \"__rowstream_rowid\""
        );
        let p = RowidPlan::new("select * from t order by rowid;", &["rowid".into()]).unwrap();
        assert_eq!(
            norm(&p.sql(Some(-3))),
            "select * , _rowid_ AS \"__rowstream_rowid\" from t WHERE _rowid_ > -3 order by rowid;"
        );
        let p = RowidPlan::new("SELECT (SELECT 1 FROM u WHERE x) FROM t", &[]).unwrap();
        assert!(norm(&p.sql(Some(1)))
            .ends_with("FROM t WHERE rowid > 1 ORDER BY \"__rowstream_rowid\""));
        let p = RowidPlan::new("SELECT * FROM t WHERE a LIMIT 5 OFFSET 2", &[]).unwrap();
        assert!(!p.seeks());
        assert_eq!(
            norm(&p.sql(Some(9))),
            "SELECT * , rowid AS \"__rowstream_rowid\" FROM t WHERE a ORDER BY \"__rowstream_rowid\" LIMIT 5 OFFSET 2"
        );
        let p = RowidPlan::new("SELECT * FROM t ORDER BY rowid LIMIT 5", &[]).unwrap();
        assert_eq!(
            norm(&p.sql(None)),
            "SELECT * , rowid AS \"__rowstream_rowid\" FROM t ORDER BY rowid LIMIT 5"
        );
        assert!(RowidPlan::new("WITH x AS (SELECT 1) SELECT * FROM x", &[]).is_none());
        assert!(RowidPlan::new(
            "SELECT * FROM t",
            &["rowid".into(), "oid".into(), "_ROWID_".into()]
        )
        .is_none());
    }

    #[test]
    fn comments_cannot_swallow_the_splices() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t(a INTEGER, b TEXT); INSERT INTO t VALUES (1,'x'),(2,'y'),(3,'z');",
        )
        .unwrap();
        let sql = "SELECT a -- the a column\nFROM t -- no filter yet\nWHERE a > 0 -- positive\n";
        let p = RowidPlan::new(sql, &["a".into(), "b".into()]).unwrap();
        for (after, expected) in [(None, vec![1, 2, 3]), (Some(1), vec![2, 3])] {
            let rewritten = p.sql(after);
            let mut stmt = c.prepare(&rewritten).unwrap();
            assert_eq!(stmt.column_count(), 2, "{rewritten}");
            let got: Vec<i64> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, expected, "{rewritten}");
        }
    }
}
