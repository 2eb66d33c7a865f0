//! The PostgreSQL side of the classifier: its vocabulary, its `FROM`
//! clause, the primary-key `ORDER BY` check and the verdict's precedence
//! (documented in the parent module under "PostgreSQL").

use std::borrow::Cow;
use std::ops::Range;

use super::{
    contains_ignore_case, FromShape, NotResumableReason, Resumability, Statement, TableSource,
};
use crate::core::sql::postgres::tokenize_postgres;
use crate::core::sql::tokenizer::{Dialect, Token, TokenKind};

/// PostgreSQL's reserved key words and the "type/function name" key words
/// (which cannot be a table alias or column name either), from Appendix C of
/// the PostgreSQL manual.
const RESERVED: &[&str] = &[
    "ALL",
    "ANALYSE",
    "ANALYZE",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "ASYMMETRIC",
    "AUTHORIZATION",
    "BINARY",
    "BOTH",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLLATION",
    "COLUMN",
    "CONCURRENTLY",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "CURRENT_CATALOG",
    "CURRENT_DATE",
    "CURRENT_ROLE",
    "CURRENT_SCHEMA",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "DEFAULT",
    "DEFERRABLE",
    "DESC",
    "DISTINCT",
    "DO",
    "ELSE",
    "END",
    "EXCEPT",
    "FALSE",
    "FETCH",
    "FOR",
    "FOREIGN",
    "FREEZE",
    "FROM",
    "FULL",
    "GRANT",
    "GROUP",
    "HAVING",
    "ILIKE",
    "IN",
    "INITIALLY",
    "INNER",
    "INTERSECT",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "LATERAL",
    "LEADING",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "NATURAL",
    "NOT",
    "NOTNULL",
    "NULL",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "OUTER",
    "OVERLAPS",
    "PLACING",
    "PRIMARY",
    "REFERENCES",
    "RETURNING",
    "RIGHT",
    "SELECT",
    "SESSION_USER",
    "SIMILAR",
    "SOME",
    "SYMMETRIC",
    "SYSTEM_USER",
    "TABLE",
    "TABLESAMPLE",
    "THEN",
    "TO",
    "TRAILING",
    "TRUE",
    "UNION",
    "UNIQUE",
    "USER",
    "USING",
    "VARIADIC",
    "VERBOSE",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// Statements a `WITH` prefix may introduce, other than `SELECT`.
pub(super) const NON_SELECT_VERBS: &[&str] =
    &["INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"];

/// PostgreSQL's built-in aggregate functions (general-purpose, statistical
/// and ordered-set; any call followed by `WITHIN GROUP` counts as well).
pub(super) const AGGREGATES: &[&str] = &[
    "any_value",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "every",
    "grouping",
    "json_agg",
    "json_agg_strict",
    "json_arrayagg",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "json_objectagg",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "max",
    "min",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
];

/// Built-in set-returning functions: in the select list each repeats its
/// row (and its key) once per element.
pub(super) const SET_RETURNING: &[&str] = &[
    "aclexplode",
    "generate_series",
    "generate_subscripts",
    "json_array_elements",
    "json_array_elements_text",
    "json_each",
    "json_each_text",
    "json_object_keys",
    "json_populate_recordset",
    "json_to_recordset",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_object_keys",
    "jsonb_path_query",
    "jsonb_populate_recordset",
    "jsonb_to_recordset",
    "pg_listening_channels",
    "pg_ls_dir",
    "regexp_matches",
    "regexp_split_to_table",
    "string_to_table",
    "ts_debug",
    "ts_parse",
    "ts_stat",
    "ts_token_type",
    "unnest",
];

/// Functions whose value differs between two runs of the query (each resume
/// runs in a new transaction, so `now()` moves too), or that change state.
const VOLATILE_FUNCTIONS: &[&str] = &[
    "clock_timestamp",
    "currval",
    "gen_random_uuid",
    "inet_client_addr",
    "inet_client_port",
    "lastval",
    "nextval",
    "now",
    "pg_backend_pid",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "random",
    "random_normal",
    "setseed",
    "setval",
    "statement_timestamp",
    "timeofday",
    "transaction_timestamp",
    "txid_current",
    "txid_current_if_assigned",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
];

/// Keywords that read the clock.
const CLOCK_KEYWORDS: &[&str] = &[
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "LOCALTIME",
    "LOCALTIMESTAMP",
];

/// Date/time input strings that read the clock when cast.
const CLOCK_STRINGS: &[&str] = &["now", "today", "tomorrow", "yesterday"];

pub(super) fn is_reserved(word: &str) -> bool {
    contains_ignore_case(RESERVED, word)
}

/// PostgreSQL's folding of an unquoted identifier (ASCII only, as for UTF-8
/// databases).
pub(super) fn fold(word: &str) -> Cow<'_, str> {
    if word.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(word.to_ascii_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// Classifies PostgreSQL `sql` (see [`super::assess_resumability_in`]).
pub(super) fn assess(sql: &str, primary_key: &dyn Fn(&str) -> Option<Vec<String>>) -> Resumability {
    use NotResumableReason as R;
    let Ok(tokens) = tokenize_postgres(sql) else {
        return Resumability::no(R::ParseError, None, false);
    };
    let mut statements: Vec<&[Token<'_>]> =
        tokens.split(|t| t.kind == TokenKind::Semicolon).collect();
    while statements.last().is_some_and(|s| s.is_empty()) {
        statements.pop();
    }
    match statements.as_slice() {
        [] => Resumability::no(R::NotASelect, None, false),
        [statement] => classify(statement, primary_key),
        _ => Resumability::no(R::MultipleStatements, None, false),
    }
}

fn classify(toks: &[Token<'_>], primary_key: &dyn Fn(&str) -> Option<Vec<String>>) -> Resumability {
    use NotResumableReason as R;
    let is_with = toks.first().is_some_and(|t| t.is_keyword("WITH"));
    let is_select = toks.first().is_some_and(|t| t.is_keyword("SELECT"));
    if !is_with && !is_select {
        return Resumability::no(R::NotASelect, None, false);
    }
    let Some(st) = Statement::new(toks, Dialect::Postgres) else {
        return Resumability::no(R::ParseError, None, false);
    };
    let top = st.top_level(0..toks.len());
    let has_limit = top
        .iter()
        .any(|&i| st.keyword(i, "LIMIT") || st.keyword(i, "OFFSET") || st.keyword(i, "FETCH"));
    if is_with {
        return match st.main_verb_after_with() {
            Some(true) => Resumability::no(R::CommonTableExpression, None, has_limit),
            Some(false) => Resumability::no(R::NotASelect, None, false),
            None => Resumability::no(R::ParseError, None, false),
        };
    }
    let set_operation = top
        .iter()
        .any(|&i| st.keyword(i, "UNION") || st.keyword(i, "INTERSECT") || st.keyword(i, "EXCEPT"));
    if set_operation {
        return Resumability::no(R::SetOperation, None, has_limit);
    }
    let Some(core) = st.parse_core() else {
        return Resumability::no(R::ParseError, None, false);
    };
    if core.into {
        // `SELECT … INTO t` creates a table.
        return Resumability::no(R::NotASelect, None, false);
    }
    let source = match core.from {
        None => return Resumability::no(R::NoTable, None, has_limit),
        Some(FromShape::Join) => return Resumability::no(R::Join, None, has_limit),
        Some(FromShape::Derived) => return Resumability::no(R::DerivedTable, None, has_limit),
        Some(FromShape::TableFunction) => {
            return Resumability::no(R::TableValuedFunction, None, has_limit)
        }
        Some(FromShape::TableSample(source)) => {
            return Resumability::no(R::TableSample, Some(source.name), has_limit)
                .with_source(source.schema, false)
        }
        Some(FromShape::Table(source)) => source,
    };
    let table = Some(source.name.clone());
    let calls = st.scan_own_scope();
    let mut key = None;
    let reason = if core.group_by {
        Some(R::GroupBy)
    } else if core.having {
        Some(R::Having)
    } else if calls.aggregate || st.has_outer_aggregate(&source) {
        Some(R::Aggregate)
    } else if calls.window || core.window {
        Some(R::WindowFunction)
    } else if calls.set_returning {
        Some(R::SetReturningFunction)
    } else if core.distinct {
        Some(R::Distinct)
    } else if core.locking {
        Some(R::LockingClause)
    } else if let Some(k) = primary_key(&source.name).filter(|k| !k.is_empty()) {
        let ordered = core
            .order_by
            .clone()
            .is_none_or(|order| st.orders_by_key(order, core.list.clone(), &source, &k));
        key = Some(k);
        if !ordered {
            Some(R::OrderByNotPrimaryKey)
        } else if st.is_non_deterministic() {
            Some(R::NonDeterministic)
        } else {
            None
        }
    } else {
        Some(R::NoPrimaryKey)
    };
    let verdict = match reason {
        Some(reason) => Resumability::no(reason, table, has_limit),
        None => Resumability::yes(table, has_limit),
    };
    verdict.with_source(source.schema, key.is_some() && core.order_by.is_some())
}

impl<'a> Statement<'_, 'a> {
    /// Classifies a PostgreSQL `FROM` clause body; `None` when it is
    /// malformed or holds something this classifier does not read (a column
    /// alias list `t AS x(a, b)`, which renames the key columns).
    pub(super) fn parse_from_postgres(&self, range: Range<usize>) -> Option<FromShape> {
        let top = self.top_level(range);
        if self.is_join_list(&top) {
            return Some(FromShape::Join);
        }
        let at = |p: usize| top.get(p).copied().unwrap_or(usize::MAX);
        let mut p = 0;
        if self.keyword(at(0), "LATERAL") {
            return Some(if self.kind(at(1)) == Some(TokenKind::LeftParen) {
                FromShape::Derived
            } else {
                FromShape::TableFunction
            });
        }
        if self.keyword(at(0), "ONLY") {
            p = 1;
        }
        let first = at(p);
        if self.kind(first) == Some(TokenKind::LeftParen) {
            let inner = self.top_level(first + 1..self.close_of(first));
            if !self.is_subquery(first) && self.is_join_list(&inner) {
                return Some(FromShape::Join);
            }
            return Some(FromShape::Derived);
        }
        if self.keyword(first, "ROWS") && self.keyword(at(p + 1), "FROM") {
            return Some(FromShape::TableFunction);
        }
        // [catalog.][schema.]table
        let mut parts = vec![self.identifier(first)?];
        p += 1;
        while self.kind(at(p)) == Some(TokenKind::Dot) {
            parts.push(self.identifier(at(p + 1))?);
            p += 2;
        }
        if parts.len() > 3 {
            return None;
        }
        if self.kind(at(p)) == Some(TokenKind::LeftParen) {
            return Some(FromShape::TableFunction);
        }
        // `t *`: the table and its inheritance children (the default).
        if self
            .tok(at(p))
            .is_some_and(|t| t.kind == TokenKind::Operator && t.text == "*")
        {
            p += 1;
        }
        let mut alias = None;
        if self.keyword(at(p), "AS") {
            alias = Some(self.identifier(at(p + 1))?);
            p += 2;
        } else if let Some(a) = self.identifier(at(p)) {
            alias = Some(a);
            p += 1;
        }
        if self.kind(at(p)) == Some(TokenKind::LeftParen) {
            return None;
        }
        let name = parts.pop()?;
        let source = TableSource {
            schema: parts.pop().map(Cow::into_owned),
            name: name.into_owned(),
            alias: alias.map(Cow::into_owned),
        };
        if self.keyword(at(p), "TABLESAMPLE") {
            return Some(FromShape::TableSample(source));
        }
        (p == top.len()).then_some(FromShape::Table(source))
    }

    /// If the tokens `idx` are `[[schema.]table.]column` of `source`, the
    /// (folded) column name and whether it was qualified. As in PostgreSQL,
    /// an alias hides the table name.
    fn key_reference(&self, idx: &[usize], source: &TableSource) -> Option<(Cow<'a, str>, bool)> {
        let is_dot = |p: usize| {
            idx.get(p)
                .is_some_and(|&i| self.kind(i) == Some(TokenKind::Dot))
        };
        let ident = |p: usize| idx.get(p).and_then(|&i| self.identifier(i));
        match idx.len() {
            1 => Some((ident(0)?, false)),
            3 if is_dot(1) => {
                let q = ident(0)?;
                (q == source.alias.as_deref().unwrap_or(&source.name)).then_some(())?;
                Some((ident(2)?, true))
            }
            5 if is_dot(1) && is_dot(3) && source.alias.is_none() => {
                let s = ident(0)?;
                let q = ident(2)?;
                let schema_ok = source.schema.as_deref().is_none_or(|x| s == x);
                (schema_ok && q == source.name).then_some(())?;
                Some((ident(4)?, true))
            }
            _ => None,
        }
    }

    /// Whether the `ORDER BY` body is exactly the key columns, in order, each
    /// with at most `ASC`.
    pub(super) fn orders_by_key(
        &self,
        order: Range<usize>,
        list: Range<usize>,
        source: &TableSource,
        key: &[String],
    ) -> bool {
        let top = self.top_level(order);
        let terms: Vec<&[usize]> = top
            .split(|&i| self.kind(i) == Some(TokenKind::Comma))
            .collect();
        if terms.len() != key.len() {
            return false;
        }
        let items = self.top_level(list);
        let items: Vec<&[usize]> = items
            .split(|&i| self.kind(i) == Some(TokenKind::Comma))
            .collect();
        terms.iter().zip(key).all(|(term, column)| {
            let term = match term.split_last() {
                Some((&last, rest)) if self.keyword(last, "ASC") => rest,
                _ => term,
            };
            let Some((name, qualified)) = self.key_reference(term, source) else {
                return false;
            };
            if name != column.as_str() {
                return false;
            }
            // An unqualified name resolves to a result-column alias first.
            qualified
                || items.iter().all(|item| match self.result_alias(item) {
                    Some((alias, expr)) if alias == name => self
                        .key_reference(expr, source)
                        .is_some_and(|(n, _)| n == name),
                    _ => true,
                })
        })
    }

    /// Whether anything in the statement, subqueries included, reads the
    /// clock or a random source, or changes state (`nextval`).
    pub(super) fn is_non_deterministic_postgres(&self) -> bool {
        (0..self.toks.len()).any(|i| {
            let Some(t) = self.tok(i) else {
                return false;
            };
            if t.kind == TokenKind::Word && contains_ignore_case(CLOCK_KEYWORDS, t.text) {
                return true;
            }
            // `'now'::timestamp`, `timestamp 'now'`, `CAST('today' AS date)`.
            if t.kind == TokenKind::String
                && contains_ignore_case(CLOCK_STRINGS, t.unquoted().trim())
            {
                let cast_after = self
                    .tok(i + 1)
                    .is_some_and(|n| n.text == "::" || n.is_keyword("AS"));
                let typed = i
                    .checked_sub(1)
                    .is_some_and(|p| self.kind(p) == Some(TokenKind::Word));
                if cast_after || typed {
                    return true;
                }
            }
            let Some(name) = self.call_name(i) else {
                return false;
            };
            // `age(ts)` measures from today.
            contains_ignore_case(VOLATILE_FUNCTIONS, &name)
                || (name.eq_ignore_ascii_case("age") && self.arguments(i + 1).len() == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::assess_resumability_in;
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn pg(sql: &str) -> Resumability {
        assess_resumability_in(sql, Dialect::Postgres, &|t| match t {
            "t" | "Big" => Some(vec!["id".to_string()]),
            "m" => Some(vec!["a".to_string(), "B".to_string()]),
            _ => None,
        })
    }

    #[test]
    fn reports_schema_table_key_order_and_limit() {
        let r = pg("SELECT * FROM Public.T AS x WHERE x.a = $1 ORDER BY x.id LIMIT 5");
        assert!(r.resumable, "{r:?}");
        assert_eq!(r.table.as_deref(), Some("t"));
        assert_eq!(r.schema.as_deref(), Some("public"));
        assert!(r.order_by_key && r.has_limit);
        let r = pg(r#"SELECT * FROM "Big" OFFSET 3"#);
        assert!(r.resumable && r.has_limit && !r.order_by_key && r.schema.is_none());
        let r = pg("SELECT * FROM m ORDER BY a, \"B\" ASC");
        assert!(r.resumable && r.order_by_key, "{r:?}");
        // Unquoted `B` folds to `b`, which is not the key column "B".
        let r = pg("SELECT * FROM m ORDER BY a, B");
        assert_eq!(r.reason, Some(NotResumableReason::OrderByNotPrimaryKey));
        let r = pg("SELECT * FROM u");
        assert_eq!(r.reason, Some(NotResumableReason::NoPrimaryKey));
        assert_eq!(r.table.as_deref(), Some("u"));
        assert!(!r.order_by_key);
    }

    #[test]
    fn primary_key_callback_is_asked_once_with_the_folded_name() {
        let seen = std::cell::RefCell::new(Vec::new());
        let pk = |t: &str| {
            seen.borrow_mut().push(t.to_string());
            Some(vec!["id".to_string()])
        };
        let r =
            assess_resumability_in("SELECT * FROM S.Events ORDER BY id", Dialect::Postgres, &pk);
        assert!(r.resumable);
        assert_eq!(*seen.borrow(), vec!["events".to_string()]);
        seen.borrow_mut().clear();
        // Not consulted when an earlier reason applies.
        let r = assess_resumability_in("SELECT count(*) FROM t", Dialect::Postgres, &pk);
        assert_eq!(r.reason, Some(NotResumableReason::Aggregate));
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn sqlite_dialect_through_the_generic_entry_point() {
        let pk = |_: &str| Some(vec!["id".to_string()]);
        let r = assess_resumability_in("SELECT * FROM t ORDER BY id", Dialect::Sqlite, &pk);
        assert!(r.resumable && r.order_by_key);
        let composite = |_: &str| Some(vec!["a".to_string(), "b".to_string()]);
        let r = assess_resumability_in("SELECT * FROM t ORDER BY a", Dialect::Sqlite, &composite);
        assert_eq!(r.reason, Some(NotResumableReason::OrderByNotRowid));
        let r = assess_resumability_in("SELECT * FROM main.t", Dialect::Sqlite, &composite);
        assert!(r.resumable && !r.order_by_key);
        assert_eq!(r.schema.as_deref(), Some("main"));
    }
}
