//! Known-answer tests for the resumability classifier (PROTOCOL.md §2.5).
//!
//! The SQLite cases live in `tests/vectors/classifier.json`, shared with the
//! JS suite. Each is `{"sql", "resumable", "reason", "note"}` plus,
//! optionally, `"integer_primary_key": {"table", "column"}` (what the schema
//! callback answers), `"table"` and `"has_limit"` (checked when present).
//!
//! The PostgreSQL cases live in `tests/vectors/classifier_postgres.json`
//! (a separate file, so the JS suite's SQLite reading stays as it is). Each
//! is `{"sql", "resumable", "reason", "note"}` plus, optionally,
//! `"primary_keys": {"table": ["col", …]}` (what the schema callback answers;
//! `{"t": ["id"]}` when absent) and `"table"`, `"schema"`, `"has_limit"`,
//! `"order_by_key"` (checked when present).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::HashMap;

use rowstream::core::resumable::{
    assess_resumability, assess_resumability_in, assess_resumability_with, Dialect,
    NotResumableReason, Resumability,
};
use serde::Deserialize;

const VECTORS: &str = include_str!("vectors/classifier.json");
const POSTGRES_VECTORS: &str = include_str!("vectors/classifier_postgres.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresVector {
    sql: String,
    resumable: bool,
    reason: Option<NotResumableReason>,
    note: String,
    #[serde(default)]
    primary_keys: Option<HashMap<String, Vec<String>>>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    has_limit: Option<bool>,
    #[serde(default)]
    order_by_key: Option<bool>,
}

fn postgres_vectors() -> Vec<PostgresVector> {
    serde_json::from_str(POSTGRES_VECTORS).expect("tests/vectors/classifier_postgres.json is valid")
}

fn assess_postgres(v: &PostgresVector) -> Resumability {
    let keys = v
        .primary_keys
        .clone()
        .unwrap_or_else(|| HashMap::from([("t".to_string(), vec!["id".to_string()])]));
    assess_resumability_in(&v.sql, Dialect::Postgres, &|table| keys.get(table).cloned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegerPrimaryKey {
    table: String,
    column: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    sql: String,
    resumable: bool,
    reason: Option<NotResumableReason>,
    note: String,
    #[serde(default)]
    integer_primary_key: Option<IntegerPrimaryKey>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    has_limit: Option<bool>,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(VECTORS).expect("tests/vectors/classifier.json is valid")
}

fn assess(v: &Vector) -> Resumability {
    let ipk = |table: &str| {
        v.integer_primary_key
            .as_ref()
            .filter(|k| k.table.eq_ignore_ascii_case(table))
            .map(|k| k.column.clone())
    };
    assess_resumability_with(&v.sql, &ipk)
}

#[test]
fn vectors_are_well_formed_and_cover_every_reason() {
    let vectors = vectors();
    assert!(vectors.len() >= 80, "only {} vectors", vectors.len());
    for v in &vectors {
        assert!(
            !v.note.trim().is_empty(),
            "vector without note: {:?}",
            v.sql
        );
        assert_eq!(
            v.resumable,
            v.reason.is_none(),
            "reason must be null exactly when resumable: {:?}",
            v.sql
        );
    }
    // Every reason is expected by a vector of one dialect or the other.
    let postgres = postgres_vectors();
    for reason in NotResumableReason::ALL {
        assert!(
            vectors.iter().any(|v| v.reason == Some(reason))
                || postgres.iter().any(|v| v.reason == Some(reason)),
            "no vector expects {reason}"
        );
    }
    assert!(vectors.iter().any(|v| v.resumable));
    assert!(vectors
        .iter()
        .any(|v| v.resumable && v.integer_primary_key.is_some()));
}

#[test]
fn every_vector_gets_its_known_answer() {
    let mut failures = Vec::new();
    let vectors = vectors();
    for v in &vectors {
        let got = assess(v);
        let mut wrong = got.resumable != v.resumable || got.reason != v.reason;
        if let Some(table) = &v.table {
            wrong |= got.table.as_deref() != Some(table.as_str());
        }
        if let Some(has_limit) = v.has_limit {
            wrong |= got.has_limit != has_limit;
        }
        if wrong {
            failures.push(format!(
                "  {:?}\n    expected resumable={} reason={:?} table={:?} has_limit={:?} ({})\n    got      {:?}",
                v.sql, v.resumable, v.reason, v.table, v.has_limit, v.note, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} classifier vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn postgres_vectors_are_well_formed_and_cover_the_dialect() {
    let vectors = postgres_vectors();
    assert!(vectors.len() >= 60, "only {} vectors", vectors.len());
    for v in &vectors {
        assert!(
            !v.note.trim().is_empty(),
            "vector without note: {:?}",
            v.sql
        );
        assert_eq!(v.resumable, v.reason.is_none(), "{:?}", v.sql);
    }
    for reason in [
        NotResumableReason::NoPrimaryKey,
        NotResumableReason::OrderByNotPrimaryKey,
        NotResumableReason::LockingClause,
        NotResumableReason::TableSample,
        NotResumableReason::SetReturningFunction,
        NotResumableReason::Join,
        NotResumableReason::Aggregate,
        NotResumableReason::CommonTableExpression,
    ] {
        assert!(
            vectors.iter().any(|v| v.reason == Some(reason)),
            "no PostgreSQL vector expects {reason}"
        );
    }
    assert!(vectors
        .iter()
        .any(|v| v.resumable && v.order_by_key == Some(true)));
    assert!(vectors
        .iter()
        .any(|v| v.resumable && v.order_by_key == Some(false)));
}

#[test]
fn every_postgres_vector_gets_its_known_answer() {
    let mut failures = Vec::new();
    let vectors = postgres_vectors();
    for v in &vectors {
        let got = assess_postgres(v);
        let mut wrong = got.resumable != v.resumable || got.reason != v.reason;
        wrong |= got.resumable != got.reason.is_none();
        if let Some(table) = &v.table {
            wrong |= got.table.as_deref() != Some(table.as_str());
        }
        if let Some(schema) = &v.schema {
            wrong |= got.schema.as_deref() != Some(schema.as_str());
        }
        if let Some(has_limit) = v.has_limit {
            wrong |= got.has_limit != has_limit;
        }
        if let Some(order_by_key) = v.order_by_key {
            wrong |= got.order_by_key != order_by_key;
        }
        if wrong {
            failures.push(format!(
                "  {:?} ({})\n    expected {:?} {:?}\n    got      {:?}",
                v.sql, v.note, v.resumable, v.reason, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} PostgreSQL classifier vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn postgres_never_panics_on_prefixes_and_token_soup() {
    let vectors = postgres_vectors();
    let check = |sql: &str| {
        let r = assess_resumability_in(sql, Dialect::Postgres, &|_| Some(vec!["id".into()]));
        assert_eq!(
            r.resumable,
            r.reason.is_none(),
            "inconsistent verdict for {sql:?}"
        );
    };
    for v in &vectors {
        for (i, _) in v.sql.char_indices() {
            check(&v.sql[..i]);
            check(&v.sql[i..]);
        }
    }
    let mut noise = Noise(0x2545_F491_4F6C_DD1D);
    let mut words: Vec<&str> = vectors
        .iter()
        .flat_map(|v| v.sql.split_whitespace())
        .collect();
    words.extend([
        "$$",
        "$a$",
        "$1",
        "E'",
        "U&'",
        "::",
        "/*",
        "*/",
        "--",
        "\n",
        "'",
        "\"",
        "(",
        ")",
        ";",
        "ORDER",
        "BY",
        "FOR",
        "UPDATE",
        "DISTINCT",
        "ON",
        "LATERAL",
        "TABLESAMPLE",
        "WITHIN",
        "GROUP",
    ]);
    for _ in 0..3000 {
        let len = 1 + noise.below(14);
        let sql: Vec<&str> = (0..len).map(|_| words[noise.below(words.len())]).collect();
        let glue = if noise.below(2) == 0 { " " } else { "" };
        check(&sql.join(glue));
    }
}

#[test]
fn integer_primary_key_vectors_need_the_callback() {
    // Each resumable vector that relies on the callback must really rely on
    // it, or the vector proves nothing about the callback.
    for v in vectors()
        .iter()
        .filter(|v| v.resumable && v.integer_primary_key.is_some())
    {
        let without = assess_resumability(&v.sql);
        assert_eq!(
            without.reason,
            Some(NotResumableReason::OrderByNotRowid),
            "{:?} should need the integer primary key",
            v.sql
        );
    }
}

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check_no_panic(sql: &str) {
    let r = assess_resumability_with(sql, &|_| Some("id".to_string()));
    assert_eq!(
        r.resumable,
        r.reason.is_none(),
        "inconsistent verdict for {sql:?}"
    );
}

#[test]
fn never_panics_on_prefixes_fragments_and_noise() {
    let vectors = vectors();
    for v in &vectors {
        // Every prefix cut at a char boundary, and every byte prefix made
        // valid UTF-8 the lossy way (cuts inside multi-byte characters).
        for (i, _) in v.sql.char_indices() {
            check_no_panic(&v.sql[..i]);
            check_no_panic(&v.sql[i..]);
        }
        let bytes = v.sql.as_bytes();
        for i in 0..=bytes.len() {
            check_no_panic(&String::from_utf8_lossy(&bytes[..i]));
        }
    }

    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    // Random bytes, biased towards SQL's punctuation.
    const ALPHABET: &[u8] =
        b" \t\n'\"`[]()x,.;:?@$#-*/=<>!|0123456789aeE_SELECTFROMWHERE\xc3\xa9\xe5\x90\x8d\x00\x0b";
    for _ in 0..2000 {
        let len = noise.below(48);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if noise.below(4) == 0 {
                    noise.next() as u8
                } else {
                    ALPHABET[noise.below(ALPHABET.len())]
                }
            })
            .collect();
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }

    // Token soup: vector fragments and keywords glued in random order.
    let mut words: Vec<&str> = vectors
        .iter()
        .flat_map(|v| v.sql.split_whitespace())
        .collect();
    words.extend([
        "SELECT", "FROM", "WITH", "(", ")", "((", "))", ",", ".", ";", "ORDER", "BY", "rowid",
        "AS", "IS", "NOT", "DISTINCT", "OVER", "FILTER", "WINDOW", "w", "max(", "count(", "'",
        "\"", "/*", "*/", "--", "\n", "LIMIT", "GROUP", "JOIN", "INDEXED", "x'", "$a(", "?1", "1e",
    ]);
    for _ in 0..3000 {
        let len = 1 + noise.below(14);
        let sql: Vec<&str> = (0..len).map(|_| words[noise.below(words.len())]).collect();
        let glue = if noise.below(2) == 0 { " " } else { "" };
        check_no_panic(&sql.join(glue));
    }
}
