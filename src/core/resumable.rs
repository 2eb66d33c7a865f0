//! Decides whether a SQL query can be resumed (PROTOCOL.md §2.5).
//!
//! A stream is resumable iff its result has a stable total order over a unique
//! key, so that "the first `after_rows` rows" names the same rows every time
//! the query runs against the pinned snapshot. For SQLite that means: a single
//! plain `SELECT` from exactly one table, with no set operation, aggregate,
//! `GROUP BY`, `HAVING`, `DISTINCT`, window function or join, and with either
//! no `ORDER BY` (the server then promises rowid order) or
//! `ORDER BY rowid [ASC]` (also `_rowid_`, `oid`, optionally qualified with
//! the table name or alias, or the table's `INTEGER PRIMARY KEY` column when
//! the caller can tell us its name).
//!
//! The module ships in the browser wasm module, so it brings no SQL parser:
//! the classifier works on the tokens of [`crate::core::sql::tokenizer`]
//! (re-exported here as [`tokenize`], [`Token`], [`TokenKind`]), tracking
//! parentheses, never on substrings. Keywords inside literals, quoted
//! identifiers and comments therefore never count, and nothing inside a
//! subquery (`(SELECT …)`, `(WITH …)`, `(VALUES …)`) counts as part of the
//! outer query: `WHERE id IN (SELECT a FROM u GROUP BY a)` stays resumable.
//!
//! # Reason codes and their precedence
//!
//! When several reasons apply, the first one in this list is reported. The
//! order follows how a reader (and SQLite) takes a query apart: the input as
//! a whole, then the statement, then the compound select, then the `FROM`
//! clause, then the row-shaping clauses in SQL's logical evaluation order
//! (grouping, aggregation, windows, `DISTINCT`), then `ORDER BY`.
//!
//! 1. `parse_error` — lexical: an unterminated string, quoted identifier,
//!    blob or block comment, a malformed number/blob/parameter, or a
//!    character SQLite's tokenizer rejects (including NUL and vertical tab).
//!    Nothing after a lexical error can be trusted, so it comes first.
//! 2. `multiple_statements` — more than one statement. Empty statements after
//!    the query (`SELECT …;;`, a trailing comment) are fine; an empty
//!    statement *before* it (`; SELECT …`) is not. Every `;` outside a
//!    literal or comment ends a statement, so `CREATE TRIGGER … BEGIN …; END`
//!    counts as several.
//! 3. `not_a_select` — the statement does not start with `SELECT` or `WITH`
//!    (`INSERT`, `UPDATE`, `DELETE`, `PRAGMA`, `VALUES`, `EXPLAIN`, DDL, a
//!    parenthesised select, empty input).
//! 4. `parse_error` — unbalanced parentheses.
//! 5. `not_a_select` / `common_table_expression` — a `WITH` statement: the
//!    CTE list is skipped structurally (a malformed list is `parse_error`);
//!    if the main statement is a `SELECT` the reason is
//!    `common_table_expression`, otherwise (`WITH … DELETE`, `WITH … VALUES`)
//!    `not_a_select`.
//! 6. `set_operation` — `UNION [ALL]`, `INTERSECT` or `EXCEPT` outside
//!    parentheses.
//! 7. `parse_error` — a malformed single select: clauses out of order,
//!    `GROUP`/`ORDER` without `BY`, an empty select list or clause, a stray
//!    `SELECT`/`VALUES`, junk after the `FROM` item.
//! 8. `no_table` — no `FROM` clause (`SELECT 1`).
//! 9. `join` — more than one `FROM` item: any join keyword
//!    (`JOIN`, `NATURAL`, `LEFT`, `RIGHT`, `FULL`, `INNER`, `CROSS`, `OUTER`,
//!    `ON`, `USING`) or a comma in the `FROM` clause, including inside a
//!    parenthesised table list.
//! 10. `derived_table` — the single `FROM` item is parenthesised (a subquery,
//!     `(VALUES …)`, or even `(t)`).
//! 11. `table_valued_function` — the single `FROM` item is a function call
//!     (`json_each(…)`, `generate_series(…)`, `pragma_table_info(…)`).
//! 12. `group_by`
//! 13. `having`
//! 14. `aggregate` — a call of a known aggregate function outside subqueries
//!     (anywhere in the select list, `HAVING` or `ORDER BY`, also nested in
//!     expressions such as `coalesce(sum(x), 0)`), not followed by `OVER`.
//!     `min`/`max` with two or more arguments are SQLite's scalar functions.
//!     Also an aggregate inside a subquery over the outer table's qualified
//!     columns (see below).
//! 15. `window_function` — an `OVER` clause, a `WINDOW` clause (even unused),
//!     or a call of a window-only function (`row_number()`, `lag()`, …).
//! 16. `distinct` — `SELECT DISTINCT` (`SELECT ALL` is fine; `count(DISTINCT
//!     x)` is an aggregate, `a IS DISTINCT FROM b` is an expression).
//! 17. `order_by_not_rowid` — an `ORDER BY` that is not exactly one term
//!     naming the rowid (or the integer primary key) with an optional `ASC`.
//! 18. `non_deterministic` — the query calls something whose value changes
//!     between runs (`random()`, `randomblob()`, `changes()`,
//!     `total_changes()`, `last_insert_rowid()`, `CURRENT_DATE`,
//!     `CURRENT_TIME`, `CURRENT_TIMESTAMP`, the date/time functions with no
//!     time value or a `'now'` argument), at any depth, subqueries included.
//!     A resume re-runs the query against the snapshot and compares the
//!     prefix digest, which such a query could not be relied on to match.
//!
//! # Deliberately conservative
//!
//! The classifier never sees the schema, so whenever a construct *might*
//! break the promise it answers "not resumable":
//!
//! - Every join is refused, even one that cannot duplicate the key (a
//!   one-to-one join on a unique column): uniqueness needs the schema.
//! - `ORDER BY` must be exactly `rowid [ASC]`, qualified or not (`t.rowid`,
//!   `main.t.rowid`, or `x.rowid` when `t` is aliased `x`: as in SQLite, an
//!   alias hides the table name), or the integer primary key via
//!   [`assess_resumability_with`]. `NULLS
//!   FIRST/LAST`, `COLLATE`, `ORDER BY 1`, `(rowid)`, `+rowid` and several
//!   terms are refused even where they would sort the same way. An unqualified
//!   `ORDER BY rowid` is also refused when a result column is aliased to that
//!   name with another expression (`SELECT a AS rowid …`), since `ORDER BY`
//!   resolves result aliases first.
//! - Application-defined aggregates are unknown; the built-in ones, the JSON
//!   ones, `string_agg`, the percentile extension and common statistics
//!   extensions (`median`, `mode`, `stdev`, `variance`, …) are recognised.
//!   A function with one of those names is always taken as an aggregate.
//! - An unterminated block comment is `parse_error`, although SQLite lets it
//!   run to the end of the input. A NUL byte anywhere is `parse_error` (SQLite
//!   would silently ignore everything after it).
//!
//! - Empty statements after the query (`SELECT …;;`) are accepted, as
//!   SQLite prepares them to nothing; some hosts (Python's `sqlite3`) refuse
//!   them, which is harmless since the server decides what it executes.
//!
//! What the caller still has to check, because only the schema can tell:
//!
//! - that the table is an ordinary rowid table: not a view, not `WITHOUT
//!   ROWID`, not a virtual or eponymous table such as a bare
//!   `generate_series`;
//! - that none of its columns is itself named `rowid`, `_rowid_` or `oid`
//!   (such a column shadows the real rowid);
//! - that no aggregate in a subquery works on unqualified outer columns. An
//!   aggregate whose arguments refer only to outer columns belongs to the
//!   outer query (`SELECT (SELECT max(t.a) FROM u) FROM t` is one row). It is
//!   reported as `aggregate` when those columns are qualified with the outer
//!   table or alias, but `max(a)` where only `t` has a column `a` needs the
//!   schema.
//!
//! [`Resumability::table`] holds the name to look up: the unqualified table
//! name, which is also what the `integer_primary_key` callback receives.
//!
//! # PostgreSQL
//!
//! [`assess_resumability_in`] with [`Dialect::Postgres`] reads the query with
//! PostgreSQL's lexical rules ([`crate::core::sql::postgres`]: dollar quotes,
//! `E'…'`, `U&'…'`, `::`, `$1`, nested comments) and its name rules (unquoted
//! identifiers fold to lower case, quoted ones are exact; string literals are
//! never names). The unique key is the table's primary key, which the caller
//! supplies through the `primary_key` callback. A query is resumable when it
//! is a single plain `SELECT` from one table, as for SQLite, and its
//! `ORDER BY` is absent (the server orders by the key) or exactly the key
//! columns in key order, each optionally qualified and optionally `ASC`
//! (`DESC`, `NULLS …`, `COLLATE`, `USING`, ordinals and expressions are
//! refused). The reasons and their precedence:
//!
//! 1. `parse_error` (lexical), 2. `multiple_statements`, 3. `not_a_select`
//!    (also `TABLE t` and `VALUES`), 4. `parse_error` (parentheses),
//!    5. `common_table_expression` / `not_a_select` for `WITH`,
//!    6. `set_operation`, 7. `parse_error` (a malformed select, or a column
//!    alias list `FROM t AS x(a, b)`, which renames the key), 8.
//!    `not_a_select` for `SELECT … INTO`, 9. `no_table`, 10. `join` (also
//!    `LATERAL` next to another item), 11. `derived_table` (also a lone
//!    `LATERAL (…)`), 12. `table_valued_function` (a function or
//!    `ROWS FROM (…)` in `FROM`), 13. `table_sample`, 14. `group_by`,
//!    15. `having`, 16. `aggregate` (PostgreSQL's aggregates, `min`/`max`
//!    always, any call with `WITHIN GROUP`), 17. `window_function`,
//!    18. `set_returning_function` (`unnest(…)`, `generate_series(…)`, … in
//!    the select list: each repeats the key), 19. `distinct` (also
//!    `DISTINCT ON`), 20. `locking_clause` (`FOR UPDATE`, `FOR NO KEY
//!    UPDATE`, `FOR SHARE`, `FOR KEY SHARE`), 21. `no_primary_key` (the
//!    callback answers `None` or an empty key), 22. `order_by_not_primary_key`,
//!    23. `non_deterministic` (`now()`, `random()`, `CURRENT_TIMESTAMP`,
//!    `LOCALTIME`, `nextval(…)`, `gen_random_uuid()`, `'now'`/`'today'` cast
//!    to a date/time type, `age(x)`, … — each resume runs in a new
//!    transaction, so even `now()` moves).
//!
//! `LIMIT`, `OFFSET` and `FETCH FIRST` set [`Resumability::has_limit`].
//! [`Resumability::schema`] is the qualifying schema, and
//! [`Resumability::order_by_key`] says whether the query carries its own key
//! `ORDER BY`. What the caller still has to check: that the table is a
//! plain or partitioned table (not a view, and not an inheritance parent
//! whose children share no key; `ONLY t` avoids the children), that
//! user-defined functions in the select list return one row (a user-defined
//! set-returning function is not recognised) and are deterministic, and that
//! `standard_conforming_strings` is on (the default; otherwise `'…\'…'`
//! would be read differently by PostgreSQL).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

// The tokenizer lives in `core::sql`; these paths stay for existing callers.
pub use crate::core::sql::tokenizer::{
    tokenize, tokenize_in, Dialect, LexError, LexErrorKind, Token, TokenKind,
};

mod postgres;

/// Why a query is not resumable: a stable snake_case code sent to clients as
/// `open.reason` (PROTOCOL.md §2.5).
///
/// The module documentation lists the precedence used when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotResumableReason {
    /// `not_a_select`: the statement is not a `SELECT` (`INSERT`, `UPDATE`,
    /// `DELETE`, `PRAGMA`, `VALUES`, `EXPLAIN`, DDL, `WITH … DELETE`, empty).
    NotASelect,
    /// `multiple_statements`: the input holds more than one statement.
    MultipleStatements,
    /// `set_operation`: `UNION`, `UNION ALL`, `INTERSECT` or `EXCEPT`.
    SetOperation,
    /// `aggregate`: an aggregate function outside subqueries (`count(*)`).
    Aggregate,
    /// `group_by`: a `GROUP BY` clause.
    GroupBy,
    /// `having`: a `HAVING` clause.
    Having,
    /// `distinct`: `SELECT DISTINCT`.
    Distinct,
    /// `window_function`: an `OVER` clause, a `WINDOW` clause or a
    /// window-only function.
    WindowFunction,
    /// `join`: more than one `FROM` item (any join or a comma list).
    Join,
    /// `derived_table`: the `FROM` item is a parenthesised subquery or list.
    DerivedTable,
    /// `common_table_expression`: the select starts with `WITH`.
    CommonTableExpression,
    /// `order_by_not_rowid`: `ORDER BY` something other than the rowid or
    /// integer primary key ascending.
    OrderByNotRowid,
    /// `no_table`: the select has no `FROM` clause.
    NoTable,
    /// `parse_error`: the input is not well-formed enough to classify.
    ParseError,
    /// `table_valued_function`: the `FROM` item is a table-valued function
    /// such as `json_each(…)`.
    TableValuedFunction,
    /// `non_deterministic`: the query calls something whose value changes
    /// from run to run (`random()`, `CURRENT_TIMESTAMP`, `datetime('now')`).
    NonDeterministic,
    /// `no_primary_key` (PostgreSQL): the table has no primary key the
    /// schema callback knows of, so there is no unique key to order by.
    NoPrimaryKey,
    /// `order_by_not_primary_key` (PostgreSQL): `ORDER BY` something other
    /// than exactly the primary key columns, in order, ascending.
    OrderByNotPrimaryKey,
    /// `locking_clause` (PostgreSQL): `FOR UPDATE`, `FOR SHARE`, ….
    LockingClause,
    /// `table_sample` (PostgreSQL): the table is read with `TABLESAMPLE`.
    TableSample,
    /// `set_returning_function` (PostgreSQL): a set-returning function such
    /// as `unnest(…)` or `generate_series(…)` in the select list, which
    /// repeats the key.
    SetReturningFunction,
}

impl NotResumableReason {
    /// Every reason, in declaration order.
    pub const ALL: [NotResumableReason; 21] = [
        Self::NotASelect,
        Self::MultipleStatements,
        Self::SetOperation,
        Self::Aggregate,
        Self::GroupBy,
        Self::Having,
        Self::Distinct,
        Self::WindowFunction,
        Self::Join,
        Self::DerivedTable,
        Self::CommonTableExpression,
        Self::OrderByNotRowid,
        Self::NoTable,
        Self::ParseError,
        Self::TableValuedFunction,
        Self::NonDeterministic,
        Self::NoPrimaryKey,
        Self::OrderByNotPrimaryKey,
        Self::LockingClause,
        Self::TableSample,
        Self::SetReturningFunction,
    ];

    /// The stable snake_case code, identical to the serde representation.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotASelect => "not_a_select",
            Self::MultipleStatements => "multiple_statements",
            Self::SetOperation => "set_operation",
            Self::Aggregate => "aggregate",
            Self::GroupBy => "group_by",
            Self::Having => "having",
            Self::Distinct => "distinct",
            Self::WindowFunction => "window_function",
            Self::Join => "join",
            Self::DerivedTable => "derived_table",
            Self::CommonTableExpression => "common_table_expression",
            Self::OrderByNotRowid => "order_by_not_rowid",
            Self::NoTable => "no_table",
            Self::ParseError => "parse_error",
            Self::TableValuedFunction => "table_valued_function",
            Self::NonDeterministic => "non_deterministic",
            Self::NoPrimaryKey => "no_primary_key",
            Self::OrderByNotPrimaryKey => "order_by_not_primary_key",
            Self::LockingClause => "locking_clause",
            Self::TableSample => "table_sample",
            Self::SetReturningFunction => "set_returning_function",
        }
    }
}

impl fmt::Display for NotResumableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classifier's verdict on one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumability {
    /// Whether the query may get a resume cursor.
    pub resumable: bool,
    /// Why not; `Some` exactly when `resumable` is false.
    pub reason: Option<NotResumableReason>,
    /// The single source table, unquoted and without its schema, whenever the
    /// `FROM` clause was found to name exactly one plain table (also when a
    /// later clause makes the query non-resumable).
    pub table: Option<String>,
    /// A `LIMIT` (with or without `OFFSET`; in PostgreSQL also a lone
    /// `OFFSET` or `FETCH FIRST`) is present at the top level of a `SELECT`
    /// statement (false when the input does not parse).
    pub has_limit: bool,
    /// The schema the table was qualified with (`main` in `main.t`,
    /// `sales` in `sales.orders` or `db.sales.orders`), unquoted (and, in
    /// PostgreSQL, case-folded unless quoted); `None` when unqualified or
    /// when [`Resumability::table`] is `None`.
    pub schema: Option<String>,
    /// The query has its own `ORDER BY` on the key (the rowid or integer
    /// primary key in SQLite, the primary key columns in PostgreSQL). Only
    /// ever true for a resumable query; when false and resumable, the server
    /// supplies the key order itself.
    pub order_by_key: bool,
}

impl Resumability {
    fn yes(table: Option<String>, has_limit: bool) -> Self {
        Self {
            resumable: true,
            reason: None,
            table,
            has_limit,
            schema: None,
            order_by_key: false,
        }
    }

    fn no(reason: NotResumableReason, table: Option<String>, has_limit: bool) -> Self {
        Self {
            resumable: false,
            reason: Some(reason),
            table,
            has_limit,
            schema: None,
            order_by_key: false,
        }
    }

    fn with_source(mut self, schema: Option<String>, order_by_key: bool) -> Self {
        if self.table.is_some() {
            self.schema = schema;
        }
        self.order_by_key = order_by_key && self.resumable;
        self
    }
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

/// Words SQLite never accepts as a bare identifier (its keywords without an
/// `ID` fallback), plus the join keywords, which may only be names after `AS`.
const RESERVED: &[&str] = &[
    "ADD",
    "ALL",
    "ALTER",
    "AND",
    "AS",
    "AUTOINCREMENT",
    "BETWEEN",
    "CASE",
    "CHECK",
    "COLLATE",
    "COMMIT",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "DEFAULT",
    "DEFERRABLE",
    "DELETE",
    "DISTINCT",
    "DROP",
    "ELSE",
    "ESCAPE",
    "EXCEPT",
    "EXISTS",
    "FOREIGN",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "IN",
    "INDEX",
    "INDEXED",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "LEFT",
    "LIMIT",
    "NATURAL",
    "NOT",
    "NOTHING",
    "NOTNULL",
    "NULL",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "PRIMARY",
    "REFERENCES",
    "RETURNING",
    "RIGHT",
    "SELECT",
    "SET",
    "TABLE",
    "THEN",
    "TO",
    "TRANSACTION",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USING",
    "VALUES",
    "WHEN",
    "WHERE",
];

/// Words that, outside parentheses in a `FROM` clause, mean a second item.
const JOIN_WORDS: &[&str] = &[
    "JOIN", "NATURAL", "LEFT", "RIGHT", "FULL", "INNER", "CROSS", "OUTER", "ON", "USING",
];

/// Aggregate functions (lower case): SQLite's built-ins, the JSON ones, the
/// percentile extension and common statistics extensions.
const AGGREGATES: &[&str] = &[
    "avg",
    "count",
    "group_concat",
    "json_group_array",
    "json_group_object",
    "jsonb_group_array",
    "jsonb_group_object",
    "lower_quartile",
    "max",
    "median",
    "min",
    "mode",
    "percentile",
    "percentile_cont",
    "percentile_disc",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "stdev",
    "string_agg",
    "sum",
    "total",
    "upper_quartile",
    "var_pop",
    "var_samp",
    "variance",
];

/// Functions that only exist as window functions.
const WINDOW_ONLY: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// Functions whose result differs from one run to the next.
const VOLATILE_FUNCTIONS: &[&str] = &[
    "random",
    "randomblob",
    "changes",
    "total_changes",
    "last_insert_rowid",
];

/// Date/time functions that read the clock when called with no argument.
const CLOCK_WITHOUT_ARGS: &[&str] = &["date", "time", "datetime", "julianday", "unixepoch"];

/// Date/time functions that read the clock when given a `'now'` argument.
const CLOCK_WITH_NOW: &[&str] = &[
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
];

/// Keywords that read the clock.
const CLOCK_KEYWORDS: &[&str] = &["CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP"];

/// Names of the rowid.
const ROWID_NAMES: &[&str] = &["rowid", "_rowid_", "oid"];

/// Statements a `WITH` prefix may introduce, other than `SELECT`.
const NON_SELECT_VERBS: &[&str] = &["INSERT", "REPLACE", "UPDATE", "DELETE", "VALUES"];

fn contains_ignore_case(list: &[&str], word: &str) -> bool {
    list.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn is_reserved(word: &str) -> bool {
    contains_ignore_case(RESERVED, word)
}

// ---------------------------------------------------------------------------
// Classifier
// ---------------------------------------------------------------------------

/// Classifies `sql` without schema knowledge: only the rowid names
/// (`rowid`, `_rowid_`, `oid`) are accepted in `ORDER BY`.
///
/// ```
/// # use rowstream::core::resumable::{assess_resumability, NotResumableReason};
/// let r = assess_resumability("SELECT * FROM events WHERE kind = ? ORDER BY rowid");
/// assert!(r.resumable);
/// assert_eq!(r.table.as_deref(), Some("events"));
///
/// let r = assess_resumability("SELECT kind, count(*) FROM events GROUP BY kind");
/// assert_eq!(r.reason, Some(NotResumableReason::GroupBy));
/// ```
#[must_use]
pub fn assess_resumability(sql: &str) -> Resumability {
    assess_resumability_with(sql, &|_| None)
}

/// Like [`assess_resumability`], but `integer_primary_key(table)` returns the
/// table's `INTEGER PRIMARY KEY` column name (an alias of rowid), so
/// `ORDER BY <that column> [ASC]` is accepted too.
///
/// The callback receives the unquoted table name without its schema. It is
/// only called while checking a single `ORDER BY` term (or a result column
/// aliased to that term's name) that is not already a rowid name.
#[must_use]
pub fn assess_resumability_with(
    sql: &str,
    integer_primary_key: &dyn Fn(&str) -> Option<String>,
) -> Resumability {
    use NotResumableReason as R;
    let Ok(tokens) = tokenize(sql) else {
        return Resumability::no(R::ParseError, None, false);
    };
    let mut statements: Vec<&[Token<'_>]> =
        tokens.split(|t| t.kind == TokenKind::Semicolon).collect();
    while statements.last().is_some_and(|s| s.is_empty()) {
        statements.pop();
    }
    match statements.as_slice() {
        [] => Resumability::no(R::NotASelect, None, false),
        [statement] => classify_statement(statement, integer_primary_key),
        _ => Resumability::no(R::MultipleStatements, None, false),
    }
}

/// Classifies `sql` in `dialect`.
///
/// `primary_key(table)` answers the table's primary key columns, in key
/// order, as the database spells them (PostgreSQL: exact, case-sensitive
/// names), or `None` when the table has none; it receives the unquoted table
/// name without its schema (PostgreSQL: case-folded unless quoted, as
/// [`Resumability::table`]). It is called at most once, and only for a single
/// plain table that passed every earlier check.
///
/// - [`Dialect::Sqlite`]: [`assess_resumability_with`], with a single-column
///   key taken as the `INTEGER PRIMARY KEY` (a `None` or multi-column key
///   leaves only the rowid names).
/// - [`Dialect::Postgres`]: see the PostgreSQL section of the module
///   documentation.
///
/// ```
/// # use rowstream::core::resumable::{assess_resumability_in, Dialect, NotResumableReason};
/// let pk = |t: &str| (t == "events").then(|| vec!["id".to_string()]);
/// let r = assess_resumability_in("SELECT * FROM app.Events WHERE kind = $1", Dialect::Postgres, &pk);
/// assert!(r.resumable && !r.order_by_key);
/// assert_eq!((r.schema.as_deref(), r.table.as_deref()), (Some("app"), Some("events")));
///
/// let r = assess_resumability_in("SELECT * FROM events ORDER BY id DESC", Dialect::Postgres, &pk);
/// assert_eq!(r.reason, Some(NotResumableReason::OrderByNotPrimaryKey));
/// ```
#[must_use]
pub fn assess_resumability_in(
    sql: &str,
    dialect: Dialect,
    primary_key: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Resumability {
    match dialect {
        Dialect::Sqlite => assess_resumability_with(sql, &|table| match primary_key(table) {
            Some(mut key) if key.len() == 1 => key.pop(),
            _ => None,
        }),
        Dialect::Postgres => postgres::assess(sql, primary_key),
    }
}

fn classify_statement(
    toks: &[Token<'_>],
    integer_primary_key: &dyn Fn(&str) -> Option<String>,
) -> Resumability {
    use NotResumableReason as R;
    let is_with = toks.first().is_some_and(|t| t.is_keyword("WITH"));
    let is_select = toks.first().is_some_and(|t| t.is_keyword("SELECT"));
    if !is_with && !is_select {
        return Resumability::no(R::NotASelect, None, false);
    }
    let Some(st) = Statement::new(toks, Dialect::Sqlite) else {
        return Resumability::no(R::ParseError, None, false);
    };
    let has_limit = st
        .top_level(0..toks.len())
        .into_iter()
        .any(|i| st.keyword(i, "LIMIT"));
    if is_with {
        return match st.main_verb_after_with() {
            Some(true) => Resumability::no(R::CommonTableExpression, None, has_limit),
            Some(false) => Resumability::no(R::NotASelect, None, false),
            None => Resumability::no(R::ParseError, None, false),
        };
    }
    let set_operation = st
        .top_level(0..toks.len())
        .into_iter()
        .any(|i| st.keyword(i, "UNION") || st.keyword(i, "INTERSECT") || st.keyword(i, "EXCEPT"));
    if set_operation {
        return Resumability::no(R::SetOperation, None, has_limit);
    }
    let Some(core) = st.parse_core() else {
        return Resumability::no(R::ParseError, None, false);
    };
    let source = match core.from {
        None => return Resumability::no(R::NoTable, None, has_limit),
        Some(FromShape::Join) => return Resumability::no(R::Join, None, has_limit),
        Some(FromShape::Derived) => return Resumability::no(R::DerivedTable, None, has_limit),
        Some(FromShape::TableFunction) => {
            return Resumability::no(R::TableValuedFunction, None, has_limit)
        }
        Some(FromShape::TableSample(_)) => {
            return Resumability::no(R::TableSample, None, has_limit)
        }
        Some(FromShape::Table(source)) => source,
    };
    let table = Some(source.name.clone());
    let own_order = core.order_by.is_some();
    let calls = st.scan_own_scope();
    let reason = if core.group_by {
        Some(R::GroupBy)
    } else if core.having {
        Some(R::Having)
    } else if calls.aggregate || st.has_outer_aggregate(&source) {
        Some(R::Aggregate)
    } else if calls.window || core.window {
        Some(R::WindowFunction)
    } else if core.distinct {
        Some(R::Distinct)
    } else if core
        .order_by
        .is_some_and(|order| !st.orders_by_rowid(order, core.list, &source, integer_primary_key))
    {
        Some(R::OrderByNotRowid)
    } else if st.is_non_deterministic() {
        Some(R::NonDeterministic)
    } else {
        None
    };
    let verdict = match reason {
        Some(reason) => Resumability::no(reason, table, has_limit),
        None => Resumability::yes(table, has_limit),
    };
    verdict.with_source(source.schema, own_order)
}

/// The single plain table of a `FROM` clause.
#[derive(Debug)]
struct TableSource {
    schema: Option<String>,
    name: String,
    alias: Option<String>,
}

/// What a `FROM` clause holds.
#[derive(Debug)]
enum FromShape {
    Table(TableSource),
    Join,
    Derived,
    TableFunction,
    /// PostgreSQL: a table read with `TABLESAMPLE`.
    TableSample(TableSource),
}

/// The clauses of one select core, as token index ranges of their bodies.
#[derive(Debug)]
struct Core {
    distinct: bool,
    /// PostgreSQL: a `FOR UPDATE`/`FOR SHARE`/… clause.
    locking: bool,
    /// PostgreSQL: `SELECT … INTO new_table` (creates a table).
    into: bool,
    list: Range<usize>,
    from: Option<FromShape>,
    group_by: bool,
    having: bool,
    window: bool,
    order_by: Option<Range<usize>>,
}

/// What the own-scope scan found.
#[derive(Debug, Default)]
struct Calls {
    aggregate: bool,
    window: bool,
    /// PostgreSQL: a known set-returning function is called.
    set_returning: bool,
}

/// The clauses of a select core, in the only order SQLite accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Clause {
    From,
    Where,
    GroupBy,
    Having,
    Window,
    OrderBy,
    Limit,
}

/// One statement's tokens with their parentheses matched.
struct Statement<'s, 'a> {
    toks: &'s [Token<'a>],
    dialect: Dialect,
    /// For each `(`, the index of its `)`; unused elsewhere.
    close: Vec<usize>,
}

impl<'s, 'a> Statement<'s, 'a> {
    /// Matches parentheses; `None` when they are unbalanced.
    fn new(toks: &'s [Token<'a>], dialect: Dialect) -> Option<Self> {
        let mut close = vec![0; toks.len()];
        let mut open = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            match t.kind {
                TokenKind::LeftParen => open.push(i),
                TokenKind::RightParen => *close.get_mut(open.pop()?)? = i,
                _ => {}
            }
        }
        open.is_empty().then_some(Self {
            toks,
            dialect,
            close,
        })
    }

    fn tok(&self, i: usize) -> Option<&Token<'a>> {
        self.toks.get(i)
    }

    fn kind(&self, i: usize) -> Option<TokenKind> {
        self.tok(i).map(|t| t.kind)
    }

    fn keyword(&self, i: usize, keyword: &str) -> bool {
        self.tok(i).is_some_and(|t| t.is_keyword(keyword))
    }

    /// Index of the `)` matching the `(` at `open`.
    fn close_of(&self, open: usize) -> usize {
        self.close.get(open).copied().unwrap_or(open).max(open)
    }

    /// The index after token `i`, jumping over a whole parenthesised group.
    fn next(&self, i: usize) -> usize {
        if self.kind(i) == Some(TokenKind::LeftParen) {
            self.close_of(i) + 1
        } else {
            i + 1
        }
    }

    /// Indices of the tokens in `range` outside any parentheses opened
    /// within it; a group shows up as the index of its `(`.
    fn top_level(&self, range: Range<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = range.start;
        while i < range.end.min(self.toks.len()) {
            out.push(i);
            i = self.next(i);
        }
        out
    }

    /// Whether the group opened at `open` is a subquery.
    fn is_subquery(&self, open: usize) -> bool {
        self.kind(open) == Some(TokenKind::LeftParen)
            && (self.keyword(open + 1, "SELECT")
                || self.keyword(open + 1, "WITH")
                || self.keyword(open + 1, "VALUES"))
    }

    /// A name usable as an identifier: a non-reserved word or a quoted
    /// identifier.
    ///
    /// PostgreSQL folds an unquoted identifier to lower case, so there the
    /// word comes back folded; SQLite names compare case-insensitively and
    /// come back as written.
    fn identifier(&self, i: usize) -> Option<Cow<'a, str>> {
        let t = self.tok(i)?;
        match (t.kind, self.dialect) {
            (TokenKind::Word, Dialect::Sqlite) if !is_reserved(t.text) => {
                Some(Cow::Borrowed(t.text))
            }
            (TokenKind::Word, Dialect::Postgres) if !postgres::is_reserved(t.text) => {
                Some(postgres::fold(t.text))
            }
            (TokenKind::QuotedIdentifier, _) => Some(t.unquoted()),
            _ => None,
        }
    }

    /// SQLite's `nm`/`ids` in table names and aliases: an identifier or a
    /// string literal.
    fn name(&self, i: usize) -> Option<Cow<'a, str>> {
        let t = self.tok(i)?;
        match t.kind {
            TokenKind::String if self.dialect == Dialect::Sqlite => Some(t.unquoted()),
            _ => self.identifier(i),
        }
    }

    /// The function name when token `i` starts a call `name(`.
    fn call_name(&self, i: usize) -> Option<Cow<'a, str>> {
        if self.kind(i + 1) != Some(TokenKind::LeftParen) {
            return None;
        }
        let t = self.tok(i)?;
        match t.kind {
            TokenKind::Word => Some(Cow::Borrowed(t.text)),
            TokenKind::QuotedIdentifier => Some(t.unquoted()),
            _ => None,
        }
    }

    /// The top-level argument ranges of the call whose `(` is at `open`.
    fn arguments(&self, open: usize) -> Vec<Range<usize>> {
        let end = self.close_of(open);
        let mut args = Vec::new();
        let mut start = open + 1;
        for i in self.top_level(open + 1..end) {
            if self.kind(i) == Some(TokenKind::Comma) {
                args.push(start..i);
                start = i + 1;
            }
        }
        if start < end || !args.is_empty() {
            args.push(start..end);
        }
        args
    }

    /// For `WITH …`: skips the CTE list and reports whether the main
    /// statement is a `SELECT` (`Some(true)`), another statement
    /// (`Some(false)`) or cannot be found (`None`).
    fn main_verb_after_with(&self) -> Option<bool> {
        let mut i = 1;
        if self.keyword(i, "RECURSIVE") {
            i += 1;
        }
        loop {
            self.name(i)?;
            i += 1;
            if self.kind(i) == Some(TokenKind::LeftParen) {
                i = self.next(i);
            }
            if !self.keyword(i, "AS") {
                return None;
            }
            i += 1;
            if self.keyword(i, "NOT") {
                i += 1;
            }
            if self.keyword(i, "MATERIALIZED") {
                i += 1;
            }
            if self.kind(i) != Some(TokenKind::LeftParen) {
                return None;
            }
            i = self.next(i);
            if self.kind(i) == Some(TokenKind::Comma) {
                i += 1;
            } else {
                break;
            }
        }
        let verb = self.tok(i)?;
        let others = match self.dialect {
            Dialect::Sqlite => NON_SELECT_VERBS,
            Dialect::Postgres => postgres::NON_SELECT_VERBS,
        };
        if verb.is_keyword("SELECT") {
            Some(true)
        } else if verb.kind == TokenKind::Word && contains_ignore_case(others, verb.text) {
            Some(false)
        } else {
            None
        }
    }

    /// `WINDOW name AS` starts a window clause (SQLite's own lookahead);
    /// otherwise `window` is an identifier.
    fn is_window_clause(&self, i: usize) -> bool {
        self.keyword(i, "WINDOW") && self.identifier(i + 1).is_some() && self.keyword(i + 2, "AS")
    }

    /// `OVER` followed by `(` or a window name starts an over clause
    /// (SQLite's own lookahead); otherwise `over` is an identifier, as in
    /// `SELECT max(a) over FROM t` (an alias).
    fn is_over_clause(&self, i: usize) -> bool {
        self.keyword(i, "OVER")
            && (self.kind(i + 1) == Some(TokenKind::LeftParen) || self.identifier(i + 1).is_some())
    }

    /// Splits a single select (no set operation) into its clauses.
    fn parse_core(&self) -> Option<Core> {
        let n = self.toks.len();
        let pg = self.dialect == Dialect::Postgres;
        let mut i = 1;
        let mut distinct = false;
        let mut locking = false;
        let mut into = false;
        if self.keyword(i, "DISTINCT") {
            distinct = true;
            i += 1;
            // PostgreSQL's `DISTINCT ON (expr, …)`.
            if pg && self.keyword(i, "ON") && self.kind(i + 1) == Some(TokenKind::LeftParen) {
                i = self.next(i + 1);
            }
        } else if self.keyword(i, "ALL") {
            i += 1;
        }
        let list_start = i;
        // (clause, index of its keyword, index where its body starts)
        let mut clauses: Vec<(Clause, usize, usize)> = Vec::new();
        let mut j = i;
        while j < n {
            let Some(t) = self.tok(j) else { break };
            if t.kind == TokenKind::Word {
                // `a IS [NOT] DISTINCT FROM b` is an expression, not a clause.
                if t.is_keyword("IS") {
                    let k = if self.keyword(j + 1, "NOT") {
                        j + 2
                    } else {
                        j + 1
                    };
                    if self.keyword(k, "DISTINCT") && self.keyword(k + 1, "FROM") {
                        j = k + 2;
                        continue;
                    }
                }
                if t.is_keyword("SELECT") || t.is_keyword("VALUES") {
                    return None;
                }
                if pg {
                    // `agg(…) WITHIN GROUP (ORDER BY …)` is part of a call.
                    // … as is `ROWS FROM (…)` in a FROM clause.
                    let pair = (t.is_keyword("WITHIN") && self.keyword(j + 1, "GROUP"))
                        || (t.is_keyword("ROWS") && self.keyword(j + 1, "FROM"));
                    if pair {
                        j += 2;
                        continue;
                    }
                    if t.is_keyword("INTO") {
                        into = true;
                    }
                    let lock = t.is_keyword("FOR")
                        && ["UPDATE", "SHARE", "NO", "KEY"]
                            .iter()
                            .any(|k| self.keyword(j + 1, k));
                    locking |= lock;
                    // LIMIT, OFFSET, FETCH and locking clauses come in any
                    // order after ORDER BY; the first of them starts the tail.
                    let tail = lock || ["LIMIT", "OFFSET", "FETCH"].iter().any(|k| t.is_keyword(k));
                    if tail {
                        if clauses.last().is_none_or(|&(c, _, _)| c != Clause::Limit) {
                            clauses.push((Clause::Limit, j, j + 1));
                        }
                        j += 1;
                        continue;
                    }
                }
                let clause = if t.is_keyword("FROM") {
                    Some(Clause::From)
                } else if t.is_keyword("WHERE") {
                    Some(Clause::Where)
                } else if t.is_keyword("GROUP") {
                    Some(Clause::GroupBy)
                } else if t.is_keyword("HAVING") {
                    Some(Clause::Having)
                } else if self.is_window_clause(j) {
                    Some(Clause::Window)
                } else if t.is_keyword("ORDER") {
                    Some(Clause::OrderBy)
                } else if t.is_keyword("LIMIT") {
                    Some(Clause::Limit)
                } else {
                    None
                };
                if let Some(clause) = clause {
                    if clauses.last().is_some_and(|&(last, _, _)| last >= clause) {
                        return None;
                    }
                    let body = if matches!(clause, Clause::GroupBy | Clause::OrderBy) {
                        if !self.keyword(j + 1, "BY") {
                            return None;
                        }
                        j + 2
                    } else {
                        j + 1
                    };
                    clauses.push((clause, j, body));
                    j = body;
                    continue;
                }
            }
            j = self.next(j);
        }

        let list_end = clauses.first().map_or(n, |&(_, kw, _)| kw);
        // PostgreSQL accepts an empty select list (`SELECT FROM t`).
        if list_start >= list_end && !pg {
            return None;
        }
        let mut core = Core {
            distinct,
            locking,
            into,
            list: list_start..list_end,
            from: None,
            group_by: false,
            having: false,
            window: false,
            order_by: None,
        };
        for (k, &(clause, _, body)) in clauses.iter().enumerate() {
            let end = clauses.get(k + 1).map_or(n, |&(_, kw, _)| kw);
            if body >= end {
                return None;
            }
            match clause {
                Clause::From => {
                    core.from = Some(match self.dialect {
                        Dialect::Sqlite => self.parse_from(body..end)?,
                        Dialect::Postgres => self.parse_from_postgres(body..end)?,
                    });
                }
                Clause::GroupBy => core.group_by = true,
                Clause::Having => core.having = true,
                Clause::Window => core.window = true,
                Clause::OrderBy => core.order_by = Some(body..end),
                Clause::Where | Clause::Limit => {}
            }
        }
        Some(core)
    }

    /// Classifies a `FROM` clause body; `None` when it is malformed.
    fn parse_from(&self, range: Range<usize>) -> Option<FromShape> {
        let top = self.top_level(range);
        if self.is_join_list(&top) {
            return Some(FromShape::Join);
        }
        let at = |p: usize| top.get(p).copied().unwrap_or(usize::MAX);
        let first = at(0);
        if self.kind(first) == Some(TokenKind::LeftParen) {
            let inner = self.top_level(first + 1..self.close_of(first));
            if !self.is_subquery(first) && self.is_join_list(&inner) {
                return Some(FromShape::Join);
            }
            return Some(FromShape::Derived);
        }
        let mut name = self.name(first)?;
        let mut schema = None;
        let mut p = 1;
        if self.kind(at(p)) == Some(TokenKind::Dot) {
            schema = Some(name);
            name = self.name(at(p + 1))?;
            p += 2;
        }
        if self.kind(at(p)) == Some(TokenKind::LeftParen) {
            return Some(FromShape::TableFunction);
        }
        let mut alias = None;
        if self.keyword(at(p), "AS") {
            let t = self.tok(at(p + 1))?;
            alias = Some(match t.kind {
                TokenKind::Word => Cow::Borrowed(t.text),
                TokenKind::QuotedIdentifier | TokenKind::String => t.unquoted(),
                _ => return None,
            });
            p += 2;
        } else if let Some(a) = self.name(at(p)) {
            alias = Some(a);
            p += 1;
        }
        if self.keyword(at(p), "INDEXED") {
            if !self.keyword(at(p + 1), "BY") {
                return None;
            }
            self.name(at(p + 2))?;
            p += 3;
        } else if self.keyword(at(p), "NOT") {
            if !self.keyword(at(p + 1), "INDEXED") {
                return None;
            }
            p += 2;
        }
        if p != top.len() {
            return None;
        }
        Some(FromShape::Table(TableSource {
            schema: schema.map(Cow::into_owned),
            name: name.into_owned(),
            alias: alias.map(Cow::into_owned),
        }))
    }

    /// Whether top-level `FROM` tokens hold a comma or a join keyword (a word
    /// right after `AS` is an alias, whatever it spells).
    fn is_join_list(&self, top: &[usize]) -> bool {
        top.iter().enumerate().any(|(p, &i)| {
            let after_as = p
                .checked_sub(1)
                .and_then(|q| top.get(q))
                .is_some_and(|&prev| self.keyword(prev, "AS"));
            self.tok(i).is_some_and(|t| {
                t.kind == TokenKind::Comma
                    || (!after_as
                        && t.kind == TokenKind::Word
                        && contains_ignore_case(JOIN_WORDS, t.text))
            })
        })
    }

    /// Scans the statement outside its subqueries for aggregate calls and
    /// window functions.
    fn scan_own_scope(&self) -> Calls {
        let mut calls = Calls::default();
        let mut i = 0;
        while i < self.toks.len() {
            if self.is_subquery(i) {
                i = self.next(i);
                continue;
            }
            if self.is_over_clause(i)
                && i.checked_sub(1).and_then(|p| self.kind(p)) == Some(TokenKind::RightParen)
            {
                calls.window = true;
            }
            if self
                .call_name(i)
                .is_some_and(|name| contains_ignore_case(WINDOW_ONLY, &name))
            {
                calls.window = true;
            }
            if self.is_aggregate_call(i) {
                calls.aggregate = true;
            }
            if self.dialect == Dialect::Postgres
                && self
                    .call_name(i)
                    .is_some_and(|name| contains_ignore_case(postgres::SET_RETURNING, &name))
            {
                calls.set_returning = true;
            }
            i += 1;
        }
        calls
    }

    /// Whether token `i` starts an aggregate call: a known aggregate name, not
    /// the scalar two-or-more-argument `min`/`max`, not followed by `OVER`.
    fn is_aggregate_call(&self, i: usize) -> bool {
        let Some(name) = self.call_name(i) else {
            return false;
        };
        let open = i + 1;
        let pg = self.dialect == Dialect::Postgres;
        // Only ordered-set aggregates take `WITHIN GROUP`, whatever their name.
        if pg && self.keyword(self.next(open), "WITHIN") {
            return true;
        }
        let known = match self.dialect {
            Dialect::Sqlite => AGGREGATES,
            Dialect::Postgres => postgres::AGGREGATES,
        };
        if !contains_ignore_case(known, &name) {
            return false;
        }
        // SQLite's two-or-more-argument `min`/`max` are scalar functions
        // (PostgreSQL spells those `least`/`greatest`).
        let scalar_min_max = !pg
            && (name.eq_ignore_ascii_case("min") || name.eq_ignore_ascii_case("max"))
            && self.arguments(open).len() >= 2;
        let mut after = self.next(open);
        if self.keyword(after, "FILTER") && self.kind(after + 1) == Some(TokenKind::LeftParen) {
            after = self.next(after + 1);
        }
        !scalar_min_max && !self.is_over_clause(after)
    }

    /// SQL gives an aggregate whose arguments refer only to an outer query's
    /// columns to that outer query: `SELECT (SELECT max(t.a) FROM u) FROM t`
    /// is one row. Detected when an aggregate inside a subquery names the
    /// outer table (or its alias) as a qualifier and the subquery does not
    /// bind that name itself (a binding occurrence is never followed by a
    /// dot). Unqualified outer columns cannot be told apart without the
    /// schema.
    fn has_outer_aggregate(&self, source: &TableSource) -> bool {
        let outer = source.alias.as_deref().unwrap_or(&source.name);
        let is_outer = |i: usize| {
            self.identifier(i)
                .is_some_and(|name| name.eq_ignore_ascii_case(outer))
        };
        let mut i = 0;
        while i < self.toks.len() {
            if !self.is_subquery(i) {
                i += 1;
                continue;
            }
            let group = i + 1..self.close_of(i);
            let binds_outer_name = group
                .clone()
                .any(|k| is_outer(k) && self.kind(k + 1) != Some(TokenKind::Dot));
            if !binds_outer_name {
                // One pass: is an outer-qualified column inside the
                // parentheses of an aggregate call?
                let mut open_parens: Vec<bool> = Vec::new();
                let mut open_aggregates = 0usize;
                for k in group.clone() {
                    match self.kind(k) {
                        Some(TokenKind::LeftParen) => {
                            let call = k.checked_sub(1).is_some_and(|f| self.is_aggregate_call(f));
                            open_aggregates += usize::from(call);
                            open_parens.push(call);
                        }
                        Some(TokenKind::RightParen) => {
                            if open_parens.pop() == Some(true) {
                                open_aggregates -= 1;
                            }
                        }
                        _ => {
                            let qualified_outer =
                                is_outer(k) && self.kind(k + 1) == Some(TokenKind::Dot);
                            if qualified_outer && open_aggregates > 0 {
                                return true;
                            }
                        }
                    }
                }
            }
            i = group.end + 1;
        }
        false
    }

    /// Whether anything in the statement, subqueries included, reads the
    /// clock or a random source.
    fn is_non_deterministic(&self) -> bool {
        if self.dialect == Dialect::Postgres {
            return self.is_non_deterministic_postgres();
        }
        (0..self.toks.len()).any(|i| {
            if self.tok(i).is_some_and(|t| {
                t.kind == TokenKind::Word && contains_ignore_case(CLOCK_KEYWORDS, t.text)
            }) {
                return true;
            }
            let Some(name) = self.call_name(i) else {
                return false;
            };
            if contains_ignore_case(VOLATILE_FUNCTIONS, &name) {
                return true;
            }
            if !contains_ignore_case(CLOCK_WITH_NOW, &name) {
                return false;
            }
            let args = self.arguments(i + 1);
            // No time value means "now": `date()`, `strftime('%Y')`.
            let implicit_now = if name.eq_ignore_ascii_case("strftime") {
                args.len() == 1
            } else {
                args.is_empty() && contains_ignore_case(CLOCK_WITHOUT_ARGS, &name)
            };
            implicit_now
                || args.iter().any(|arg| {
                    arg.len() == 1
                        && self.tok(arg.start).is_some_and(|t| {
                            t.kind == TokenKind::String && t.unquoted().eq_ignore_ascii_case("now")
                        })
                })
        })
    }

    /// If the tokens `idx` are `[[schema.]table.]column` naming the rowid or
    /// the integer primary key of `source`, returns whether it was qualified.
    fn rowid_reference(
        &self,
        idx: &[usize],
        source: &TableSource,
        integer_primary_key: &dyn Fn(&str) -> Option<String>,
    ) -> Option<bool> {
        let is_dot = |p: usize| {
            idx.get(p)
                .is_some_and(|&i| self.kind(i) == Some(TokenKind::Dot))
        };
        let ident = |p: usize| idx.get(p).and_then(|&i| self.identifier(i));
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let (column, qualified) = match idx.len() {
            1 => (ident(0)?, false),
            // As in SQLite, an alias hides the table name it stands for.
            3 if is_dot(1) => {
                let q = ident(0)?;
                if !same(&q, source.alias.as_deref().unwrap_or(&source.name)) {
                    return None;
                }
                (ident(2)?, true)
            }
            5 if is_dot(1) && is_dot(3) && source.alias.is_none() => {
                let s = ident(0)?;
                let q = ident(2)?;
                let schema_ok = source.schema.as_deref().is_none_or(|x| same(&s, x));
                if !schema_ok || !same(&q, &source.name) {
                    return None;
                }
                (ident(4)?, true)
            }
            _ => return None,
        };
        let is_rowid = contains_ignore_case(ROWID_NAMES, &column)
            || integer_primary_key(&source.name).is_some_and(|k| same(&k, &column));
        is_rowid.then_some(qualified)
    }

    /// Whether the `ORDER BY` body is a single ascending rowid term.
    fn orders_by_rowid(
        &self,
        order: Range<usize>,
        list: Range<usize>,
        source: &TableSource,
        integer_primary_key: &dyn Fn(&str) -> Option<String>,
    ) -> bool {
        let mut term = self.top_level(order);
        if term.last().is_some_and(|&i| self.keyword(i, "ASC")) {
            term.pop();
        }
        let Some(qualified) = self.rowid_reference(&term, source, integer_primary_key) else {
            return false;
        };
        if qualified {
            return true;
        }
        // An unqualified name resolves to a result-column alias first.
        let Some(column) = term.first().and_then(|&i| self.identifier(i)) else {
            return false;
        };
        let items = self.top_level(list);
        items
            .split(|&i| self.kind(i) == Some(TokenKind::Comma))
            .all(|item| match self.result_alias(item) {
                Some((alias, expr)) if alias.eq_ignore_ascii_case(&column) => self
                    .rowid_reference(expr, source, integer_primary_key)
                    .is_some(),
                _ => true,
            })
    }

    /// A result column's possible alias and the expression it names. Errs on
    /// the side of seeing an alias: `a AND b` yields `b` for `a AND`.
    fn result_alias<'i>(&self, item: &'i [usize]) -> Option<(Cow<'a, str>, &'i [usize])> {
        let (&last, rest) = item.split_last()?;
        let (&prev, before) = rest.split_last()?;
        if self.kind(prev) == Some(TokenKind::Dot) {
            return None;
        }
        let alias = self.name(last)?;
        if self.keyword(prev, "AS") {
            Some((alias, before))
        } else {
            Some((alias, rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_match_serde() {
        for reason in NotResumableReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(reason.to_string(), reason.as_str());
            let back: NotResumableReason = serde_json::from_str(&json).unwrap();
            assert_eq!(back, reason);
        }
    }

    #[test]
    fn reports_table_and_limit() {
        let r = assess_resumability("SELECT * FROM main.\"Big Table\" AS b LIMIT 10 OFFSET 5");
        assert_eq!(
            r,
            Resumability::yes(Some("Big Table".into()), true)
                .with_source(Some("main".into()), false)
        );
        let r = assess_resumability("SELECT a FROM t GROUP BY a LIMIT 3");
        assert_eq!(
            r,
            Resumability::no(NotResumableReason::GroupBy, Some("t".into()), true)
        );
        // A LIMIT inside a subquery is not the statement's.
        let r = assess_resumability("SELECT * FROM t WHERE a IN (SELECT a FROM u LIMIT 1)");
        assert!(r.resumable && !r.has_limit);
    }

    #[test]
    fn integer_primary_key_callback_gets_the_unquoted_table_name() {
        let seen = std::cell::RefCell::new(Vec::new());
        let ipk = |table: &str| {
            seen.borrow_mut().push(table.to_string());
            (table == "My Table").then(|| "Id".to_string())
        };
        let r = assess_resumability_with("SELECT * FROM main.[My Table] ORDER BY id", &ipk);
        assert!(r.resumable, "{r:?}");
        assert_eq!(*seen.borrow(), vec!["My Table".to_string()]);
        // Not consulted when the term is already a rowid name.
        seen.borrow_mut().clear();
        assert!(assess_resumability_with("SELECT * FROM t ORDER BY rowid", &ipk).resumable);
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_crawls() {
        // No recursion anywhere: 50k nested groups are just a long loop.
        let depth = 50_000;
        let sql = format!(
            "SELECT * FROM t WHERE a = {}1{}",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        assert!(assess_resumability(&sql).resumable);
        let sql = format!(
            "SELECT (SELECT {}t.a{} FROM u) FROM t",
            "max(".repeat(depth),
            ")".repeat(depth)
        );
        assert_eq!(
            assess_resumability(&sql).reason,
            Some(NotResumableReason::Aggregate)
        );
        let sql = format!("SELECT {} FROM t", vec!["count(a)"; depth].join(", "));
        assert_eq!(
            assess_resumability(&sql).reason,
            Some(NotResumableReason::Aggregate)
        );
    }

    #[test]
    fn verdicts_are_consistent() {
        for sql in [
            "",
            ";",
            "SELECT",
            "SELECT * FROM t",
            "WITH",
            "(",
            ")",
            "SELECT ()",
        ] {
            let r = assess_resumability(sql);
            assert_eq!(r.resumable, r.reason.is_none(), "{sql:?}");
        }
    }
}
