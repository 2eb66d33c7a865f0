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

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

// The tokenizer lives in `core::sql`; these paths stay for existing callers.
pub use crate::core::sql::tokenizer::{tokenize, LexError, LexErrorKind, Token, TokenKind};

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
}

impl NotResumableReason {
    /// Every reason, in declaration order.
    pub const ALL: [NotResumableReason; 16] = [
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
    /// A `LIMIT` (with or without `OFFSET`) is present at the top level of a
    /// `SELECT` statement (false when the input does not parse).
    pub has_limit: bool,
}

impl Resumability {
    fn yes(table: Option<String>, has_limit: bool) -> Self {
        Self {
            resumable: true,
            reason: None,
            table,
            has_limit,
        }
    }

    fn no(reason: NotResumableReason, table: Option<String>, has_limit: bool) -> Self {
        Self {
            resumable: false,
            reason: Some(reason),
            table,
            has_limit,
        }
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
    let Some(st) = Statement::new(toks) else {
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
        Some(FromShape::Table(source)) => source,
    };
    let table = Some(source.name.clone());
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
    match reason {
        Some(reason) => Resumability::no(reason, table, has_limit),
        None => Resumability::yes(table, has_limit),
    }
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
}

/// The clauses of one select core, as token index ranges of their bodies.
#[derive(Debug)]
struct Core {
    distinct: bool,
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
    /// For each `(`, the index of its `)`; unused elsewhere.
    close: Vec<usize>,
}

impl<'s, 'a> Statement<'s, 'a> {
    /// Matches parentheses; `None` when they are unbalanced.
    fn new(toks: &'s [Token<'a>]) -> Option<Self> {
        let mut close = vec![0; toks.len()];
        let mut open = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            match t.kind {
                TokenKind::LeftParen => open.push(i),
                TokenKind::RightParen => *close.get_mut(open.pop()?)? = i,
                _ => {}
            }
        }
        open.is_empty().then_some(Self { toks, close })
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
    fn identifier(&self, i: usize) -> Option<Cow<'a, str>> {
        let t = self.tok(i)?;
        match t.kind {
            TokenKind::Word if !is_reserved(t.text) => Some(Cow::Borrowed(t.text)),
            TokenKind::QuotedIdentifier => Some(t.unquoted()),
            _ => None,
        }
    }

    /// SQLite's `nm`/`ids` in table names and aliases: an identifier or a
    /// string literal.
    fn name(&self, i: usize) -> Option<Cow<'a, str>> {
        let t = self.tok(i)?;
        match t.kind {
            TokenKind::String => Some(t.unquoted()),
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
        if verb.is_keyword("SELECT") {
            Some(true)
        } else if verb.kind == TokenKind::Word && contains_ignore_case(NON_SELECT_VERBS, verb.text)
        {
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
        let mut i = 1;
        let mut distinct = false;
        if self.keyword(i, "DISTINCT") {
            distinct = true;
            i += 1;
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
        if list_start >= list_end {
            return None;
        }
        let mut core = Core {
            distinct,
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
                Clause::From => core.from = Some(self.parse_from(body..end)?),
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
        if !contains_ignore_case(AGGREGATES, &name) {
            return false;
        }
        let open = i + 1;
        let scalar_min_max = (name.eq_ignore_ascii_case("min") || name.eq_ignore_ascii_case("max"))
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
        assert_eq!(r, Resumability::yes(Some("Big Table".into()), true));
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
