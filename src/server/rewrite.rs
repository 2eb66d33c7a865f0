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
//!
//! PostgreSQL tenants have no rowid: [`KeyPlan`] does the same with the
//! table's primary key (hidden key columns, a row-value seek predicate with
//! `$n` placeholders, key order), spliced at the PostgreSQL tokenizer's token
//! boundaries.

use crate::core::resumable::{tokenize, tokenize_in, Dialect, Token, TokenKind};

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

/// Prefix of the hidden key columns of a [`KeyPlan`]: `"__rowstream_k0"`,
/// `"__rowstream_k1"`, … (unquoted names).
pub const HIDDEN_KEY_PREFIX: &str = "__rowstream_k";

/// The unquoted name of the `i`-th hidden key column of a [`KeyPlan`].
pub fn hidden_key_column(i: usize) -> String {
    format!("{HIDDEN_KEY_PREFIX}{i}")
}

/// A PostgreSQL identifier, always quoted (`"` doubled inside).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The key rewrite for PostgreSQL resumes: the counterpart of [`RowidPlan`]
/// for a single-table `SELECT` whose unique key is the table's primary key
/// (PROTOCOL §2.5, classified by
/// [`assess_resumability_in`](crate::core::resumable::assess_resumability_in)
/// with [`Dialect::Postgres`]). The server runs
///
/// ```sql
/// SELECT <projection>, q."k0" AS "__rowstream_k0", q."k1" AS "__rowstream_k1"
///   FROM t [AS] q
///   WHERE (<where>) AND (q."k0", q."k1") > ($n, $n+1)  -- only when seeking
///   ORDER BY "__rowstream_k0", "__rowstream_k1"         -- unless the user ordered by the key
///   [LIMIT … / OFFSET … / FETCH …]
/// ```
///
/// `q` is the table's alias when it has one, else the table as written
/// (`s.t`). The hidden columns follow the user's projection, so they are the
/// last `key_columns.len()` columns of every row; a checkpoint is `(rows sent,
/// key values, digest state)` and a resume seeks past the checkpoint's key
/// with `$n…` placeholders numbered after the highest `$k` the query already
/// uses ([`KeyPlan::max_param`]). Splices happen at token boundaries of the
/// PostgreSQL tokenizer (never substrings) and are separated by newlines,
/// so a `--` comment in the client's SQL cannot swallow them. With `LIMIT`,
/// `OFFSET` or `FETCH` a seek would change which rows the limit counts:
/// [`KeyPlan::seeks`] is false and a resume skips rows instead, as with
/// [`RowidPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlan {
    sql: String,
    /// Quoted key column names, in key order.
    key: Vec<String>,
    /// How the table is referred to: its alias or its name, as written.
    qualifier: String,
    /// The top-level `FROM` keyword, where the hidden projection goes.
    from_at: usize,
    /// The select list is empty (`SELECT FROM t`): no comma before the
    /// hidden columns.
    empty_projection: bool,
    /// Just after the top-level `WHERE` keyword, if any.
    where_after: Option<usize>,
    /// The first of a top-level `ORDER`, `LIMIT`, `OFFSET`, `FETCH`, `FOR`,
    /// `;` or the end: the predicate closes and a missing `ORDER BY` goes
    /// here.
    tail_at: usize,
    has_order_by: bool,
    has_limit: bool,
    max_param: usize,
}

impl KeyPlan {
    /// Analyses PostgreSQL `sql` (already classified resumable) for the
    /// primary key `key_columns` (exact names, in key order). `None` when
    /// the key is empty or the query is not a plain single-table `SELECT`
    /// this rewrite understands; the server then runs the query unchanged
    /// and resumes by skipping rows.
    pub fn new(sql: &str, key_columns: &[String]) -> Option<KeyPlan> {
        if key_columns.is_empty() {
            return None;
        }
        let tokens = tokenize_in(sql, Dialect::Postgres).ok()?;
        let max_param = tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Parameter)
            .map(|t| t.text[1..].parse::<usize>().ok())
            .try_fold(0usize, |max, n| n.map(|n| max.max(n)))?;
        let mut depth = 0i32;
        let mut from_idx = None;
        let mut where_after = None;
        let mut order_at = None;
        let mut limit_at = None;
        let mut tail_at = None;
        let mut end_at = sql.len();
        if !tokens.first()?.is_keyword("select") {
            return None;
        }
        for (idx, t) in tokens.iter().enumerate().skip(1) {
            match t.kind {
                TokenKind::LeftParen => depth += 1,
                TokenKind::RightParen => depth -= 1,
                TokenKind::Semicolon if depth == 0 => {
                    end_at = t.offset;
                    break;
                }
                TokenKind::Word if depth == 0 => {
                    let kw = |k: &str| t.is_keyword(k);
                    if from_idx.is_none() {
                        if kw("from") {
                            from_idx = Some(idx);
                        } else if kw("into") || kw("distinct") {
                            return None;
                        }
                    } else if kw("where") {
                        if where_after.is_some() || tail_at.is_some() {
                            return None;
                        }
                        where_after = Some(t.offset + t.text.len());
                    } else if kw("order") {
                        if order_at.is_some() || limit_at.is_some() {
                            return None;
                        }
                        order_at = Some(t.offset);
                        tail_at.get_or_insert(t.offset);
                    } else if kw("limit") || kw("offset") || kw("fetch") {
                        limit_at.get_or_insert(t.offset);
                        tail_at.get_or_insert(t.offset);
                    } else if [
                        "group",
                        "having",
                        "window",
                        "union",
                        "except",
                        "intersect",
                        "select",
                        "values",
                        "into",
                        "for",
                        "tablesample",
                    ]
                    .iter()
                    .any(|k| kw(k))
                    {
                        return None;
                    }
                }
                _ => {}
            }
        }
        let from_idx = from_idx?;
        let from_at = tokens.get(from_idx)?.offset;
        let empty_projection = from_idx == 1;
        let qualifier = Self::qualifier(sql, &tokens[from_idx + 1..])?;
        Some(KeyPlan {
            sql: sql.to_owned(),
            key: key_columns.iter().map(|c| quote_ident(c)).collect(),
            qualifier,
            from_at,
            empty_projection,
            where_after,
            tail_at: tail_at.unwrap_or(end_at),
            has_order_by: order_at.is_some(),
            has_limit: limit_at.is_some(),
            max_param,
        })
    }

    /// How the single `FROM` item is referred to: `[ONLY] name[.name…] [*]
    /// [[AS] alias]` gives the alias, else the dotted name as written.
    fn qualifier(sql: &str, item: &[Token<'_>]) -> Option<String> {
        let is_name =
            |t: &Token<'_>| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdentifier);
        let mut i = usize::from(item.first()?.is_keyword("only"));
        let first = item.get(i).filter(|t| is_name(t))?;
        let mut last = first;
        i += 1;
        while item.get(i).is_some_and(|t| t.kind == TokenKind::Dot) {
            last = item.get(i + 1).filter(|t| is_name(t))?;
            i += 2;
        }
        if item
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Operator && t.text == "*")
        {
            i += 1;
        }
        if item.get(i).is_some_and(|t| t.is_keyword("as")) {
            i += 1;
        }
        const CLAUSES: &[&str] = &["where", "order", "limit", "offset", "fetch"];
        match item.get(i) {
            Some(alias) if is_name(alias) && !CLAUSES.iter().any(|k| alias.is_keyword(k)) => {
                Some(alias.text.to_owned())
            }
            _ => sql
                .get(first.offset..last.offset + last.text.len())
                .map(str::to_owned),
        }
    }

    /// Whether a resume may seek by key (false with `LIMIT`/`OFFSET`/`FETCH`).
    pub fn seeks(&self) -> bool {
        !self.has_limit
    }

    /// The highest `$n` placeholder the client's query uses (0 when none).
    /// Seek placeholders must be numbered from `max_param() + 1`.
    pub fn max_param(&self) -> usize {
        self.max_param
    }

    /// How many hidden key columns follow the user's projection.
    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    /// The query with the hidden key columns, key order (unless the user
    /// ordered by the key already) and — when `seek` is given, and
    /// [`KeyPlan::seeks`] — the predicate `key > ($seek, $seek+1, …)`, whose
    /// values the caller binds after the query's own parameters. `seek`
    /// should be `max_param() + 1`; a smaller one would collide with the
    /// client's parameters and is raised to it.
    pub fn sql(&self, seek: Option<usize>) -> String {
        let seek = seek
            .filter(|_| self.seeks())
            .map(|n| n.max(self.max_param + 1));
        let s = &self.sql;
        let (from, tail) = (self.from_at, self.tail_at);
        let column = |k: &str| format!("{}.{k}", self.qualifier);
        let hidden: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} AS {}", column(k), quote_ident(&hidden_key_column(i))))
            .collect();
        let mut out = String::with_capacity(s.len() + 64 + 48 * self.key.len());
        out.push_str(&s[..from]);
        out.push_str(if self.empty_projection { "\n" } else { "\n, " });
        out.push_str(&hidden.join(", "));
        out.push('\n');
        let predicate = seek.map(|n| {
            let columns: Vec<String> = self.key.iter().map(|k| column(k)).collect();
            let params: Vec<String> = (n..n + self.key.len()).map(|p| format!("${p}")).collect();
            if self.key.len() == 1 {
                format!("{} > {}", columns[0], params[0])
            } else {
                format!("({}) > ({})", columns.join(", "), params.join(", "))
            }
        });
        match (self.where_after, predicate) {
            (Some(w), Some(p)) => {
                out.push_str(&s[from..w]);
                out.push_str(" (");
                out.push_str(&s[w..tail]);
                out.push_str(&format!("\n) AND {p}\n"));
            }
            (None, Some(p)) => {
                out.push_str(&s[from..tail]);
                out.push_str(&format!("\nWHERE {p}\n"));
            }
            (_, None) => {
                out.push_str(&s[from..tail]);
                out.push('\n');
            }
        }
        if !self.has_order_by {
            let order: Vec<String> = (0..self.key.len())
                .map(|i| quote_ident(&hidden_key_column(i)))
                .collect();
            out.push_str("ORDER BY ");
            out.push_str(&order.join(", "));
            out.push('\n');
        }
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

    fn key(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn key_plan_adds_hidden_key_columns_order_and_seek() {
        let p = KeyPlan::new("SELECT a, b FROM t WHERE b = 1 OR c = 2", &key(&["id"])).unwrap();
        assert!(p.seeks());
        assert_eq!(p.max_param(), 0);
        assert_eq!(p.key_len(), 1);
        assert_eq!(
            norm(&p.sql(None)),
            r#"SELECT a, b , t."id" AS "__rowstream_k0" FROM t WHERE b = 1 OR c = 2 ORDER BY "__rowstream_k0""#
        );
        assert_eq!(
            norm(&p.sql(Some(1))),
            r#"SELECT a, b , t."id" AS "__rowstream_k0" FROM t WHERE ( b = 1 OR c = 2 ) AND t."id" > $1 ORDER BY "__rowstream_k0""#
        );
        // Composite key, no WHERE, user's key ORDER BY kept, `;` kept last.
        let p = KeyPlan::new("select * from s.m order by a, b;", &key(&["a", "B"])).unwrap();
        assert_eq!(
            norm(&p.sql(Some(1))),
            r#"select * , s.m."a" AS "__rowstream_k0", s.m."B" AS "__rowstream_k1" from s.m WHERE (s.m."a", s.m."B") > ($1, $2) order by a, b;"#
        );
    }

    #[test]
    fn key_plan_respects_aliases_and_quoted_identifiers() {
        let p = KeyPlan::new(
            r#"SELECT x."Na""me" FROM ONLY "My Schema"."T" AS x WHERE x."Na""me" <> ''"#,
            &key(&["I\"d"]),
        )
        .unwrap();
        assert_eq!(
            norm(&p.sql(Some(1))),
            r#"SELECT x."Na""me" , x."I""d" AS "__rowstream_k0" FROM ONLY "My Schema"."T" AS x WHERE ( x."Na""me" <> '' ) AND x."I""d" > $1 ORDER BY "__rowstream_k0""#
        );
        let p = KeyPlan::new(
            r#"SELECT * FROM "My Schema"."T" "where" LIMIT 3"#,
            &key(&["id"]),
        )
        .unwrap();
        assert!(
            norm(&p.sql(None)).starts_with(r#"SELECT * , "where"."id" AS "__rowstream_k0" FROM"#)
        );
        let p = KeyPlan::new(r#"SELECT * FROM "My Schema"."T" WHERE true"#, &key(&["id"])).unwrap();
        assert!(norm(&p.sql(None)).starts_with(r#"SELECT * , "My Schema"."T"."id" AS"#));
        // PostgreSQL's empty select list gets no leading comma.
        let p = KeyPlan::new("SELECT FROM t", &key(&["id"])).unwrap();
        assert_eq!(
            norm(&p.sql(Some(1))),
            r#"SELECT t."id" AS "__rowstream_k0" FROM t WHERE t."id" > $1 ORDER BY "__rowstream_k0""#
        );
    }

    #[test]
    fn key_plan_numbers_seek_placeholders_after_the_query_s_own() {
        let sql =
            "SELECT a, $2::int AS two FROM t WHERE a = $1 AND b IN (SELECT b FROM u WHERE c = $3)";
        let p = KeyPlan::new(sql, &key(&["a", "b"])).unwrap();
        assert_eq!(p.max_param(), 3);
        let out = norm(&p.sql(Some(p.max_param() + 1)));
        assert!(
            out.ends_with(r#"c = $3) ) AND (t."a", t."b") > ($4, $5) ORDER BY "__rowstream_k0", "__rowstream_k1""#),
            "{out}"
        );
        // A colliding start is raised past the query's own parameters.
        assert!(norm(&p.sql(Some(1))).contains("> ($4, $5)"));
        // `$n` inside strings and dollar quotes are not parameters.
        let p = KeyPlan::new("SELECT '$9', $$ $8 $$ FROM t WHERE a = $2", &key(&["id"])).unwrap();
        assert_eq!(p.max_param(), 2);
    }

    #[test]
    fn key_plan_splices_at_token_boundaries_only() {
        // `WHERE`, `FROM`, `ORDER BY` and `;` inside literals, dollar quotes,
        // quoted identifiers and comments are not clauses.
        let sql = "SELECT $q$ WHERE x; ORDER BY $q$ AS \"from\", E'\\' FROM ' AS e /* FROM t WHERE */\nFROM t -- WHERE a\nWHERE a = 'ORDER BY' -- LIMIT 1\n";
        let p = KeyPlan::new(sql, &key(&["id"])).unwrap();
        assert!(p.seeks());
        let out = p.sql(Some(1));
        let expected = "SELECT $q$ WHERE x; ORDER BY $q$ AS \"from\", E'\\' FROM ' AS e /* FROM t WHERE */\n\n, t.\"id\" AS \"__rowstream_k0\"\nFROM t -- WHERE a\nWHERE ( a = 'ORDER BY' -- LIMIT 1\n\n) AND t.\"id\" > $1\nORDER BY \"__rowstream_k0\"\n";
        assert_eq!(out, expected);
        // The rewrite is still one well-formed PostgreSQL statement.
        let toks = tokenize_in(&out, Dialect::Postgres).unwrap();
        assert_eq!(
            toks.iter()
                .filter(|t| t.kind == TokenKind::Semicolon)
                .count(),
            0
        );
        let depth = toks.iter().fold(0i32, |d, t| match t.kind {
            TokenKind::LeftParen => d + 1,
            TokenKind::RightParen => d - 1,
            _ => d,
        });
        assert_eq!(depth, 0);
        // Nested comments and subqueries with their own clauses.
        let sql = "SELECT (SELECT max(b) FROM u WHERE u.x = t.x ORDER BY 1 LIMIT 1) /* a /* FROM */ b */ FROM t WHERE substring(s FROM 1 FOR 2) = 'ab'";
        let p = KeyPlan::new(sql, &key(&["id"])).unwrap();
        assert!(norm(&p.sql(Some(1))).ends_with(
            r#"FROM t WHERE ( substring(s FROM 1 FOR 2) = 'ab' ) AND t."id" > $1 ORDER BY "__rowstream_k0""#
        ));
    }

    #[test]
    fn key_plan_with_limit_orders_but_never_seeks() {
        for sql in [
            "SELECT * FROM t LIMIT 5 OFFSET 2",
            "SELECT * FROM t OFFSET 2",
            "SELECT * FROM t FETCH FIRST 3 ROWS ONLY",
        ] {
            let p = KeyPlan::new(sql, &key(&["id"])).unwrap();
            assert!(!p.seeks(), "{sql}");
            let out = norm(&p.sql(Some(1)));
            assert!(!out.contains("$1"), "{out}");
            assert!(out.contains(r#"FROM t ORDER BY "__rowstream_k0""#), "{out}");
        }
        let p = KeyPlan::new("SELECT * FROM t ORDER BY id LIMIT 5", &key(&["id"])).unwrap();
        assert_eq!(
            norm(&p.sql(Some(1))),
            r#"SELECT * , t."id" AS "__rowstream_k0" FROM t ORDER BY id LIMIT 5"#
        );
    }

    #[test]
    fn key_plan_refuses_what_it_does_not_understand() {
        let k = key(&["id"]);
        for sql in [
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT a FROM t GROUP BY a",
            "SELECT * FROM t UNION SELECT * FROM u",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * INTO u FROM t",
            "SELECT DISTINCT a FROM t",
            "SELECT * FROM t TABLESAMPLE SYSTEM (1)",
            "SELECT 1",
            "SELECT * FROM (SELECT 1) s",
            "SELECT * FROM t WHERE a ORDER BY id WHERE b",
            "SELECT 'unterminated FROM t",
            "DELETE FROM t",
        ] {
            assert!(KeyPlan::new(sql, &k).is_none(), "{sql}");
        }
        assert!(KeyPlan::new("SELECT * FROM t", &[]).is_none());
        // RowidPlan is untouched by the PostgreSQL plan.
        assert!(RowidPlan::new("SELECT * FROM t", &[]).is_some());
    }
}
