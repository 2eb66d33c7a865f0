//! PostgreSQL's lexical syntax, as its `scan.l` reads it.
//!
//! Produces the same [`Token`]s as the SQLite tokenizer, so the classifier
//! and the server's rewrites work on either dialect:
//!
//! - strings `'…'` with `''` (no backslash escapes: `standard_conforming_strings`
//!   is on, PostgreSQL's default since 9.1), escape strings `E'…'` with
//!   backslash escapes (`E'\''` is one quote), `N'…'`, Unicode strings
//!   `U&'…'`, dollar-quoted strings `$$…$$` and `$tag$…$tag$` (the tag
//!   follows identifier rules without `$`; nothing inside counts, not even a
//!   `;` or `$other$`), bit strings `B'…'` / `X'…'` as [`TokenKind::Blob`];
//! - quoted identifiers `"…"` with `""` and `U&"…"` (a zero-length `""` is an
//!   error, as in PostgreSQL);
//! - positional parameters `$1`, `$2`, … as [`TokenKind::Parameter`];
//! - numbers with `_` separators, `0x`/`0o`/`0b` integers, fractions and
//!   exponents (a number running into identifier characters is an error, as
//!   in PostgreSQL 15+);
//! - `--` comments and nested `/* /* */ */` comments;
//! - operators: `::` and `:`, `[` and `]`, and any run of
//!   `+ - * / < > = ~ ! @ # % ^ & | \` ?` cut as PostgreSQL cuts it (never
//!   across `--` or `/*`; a trailing `+`/`-` only stays when the run holds one
//!   of `~ ! @ # % ^ & | \` ?`).
//!
//! Whitespace is space, tab, newline, carriage return, form feed and
//! vertical tab. Identifiers are `[A-Za-z_\x80-\xff][A-Za-z_0-9$\x80-\xff]*`;
//! case folding is left to the classifier.

use super::tokenizer::{is_id_char, is_id_start, LexError, LexErrorKind, Token, TokenKind};

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// PostgreSQL's operator characters.
fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// Characters that let a multi-character operator end in `+` or `-`.
fn is_op_special(c: u8) -> bool {
    matches!(
        c,
        b'~' | b'!' | b'@' | b'#' | b'%' | b'^' | b'&' | b'|' | b'`' | b'?'
    )
}

/// Splits PostgreSQL SQL into tokens, dropping whitespace and comments.
///
/// # Errors
///
/// A [`LexError`] for the first token that is unterminated (string, escape
/// string, dollar quote, quoted identifier, block comment), malformed
/// (number, bit string, a `$` that starts neither a parameter nor a dollar
/// quote) or not PostgreSQL at all (`{`, `\` outside a string, NUL).
pub fn tokenize_postgres(sql: &str) -> Result<Vec<Token<'_>>, LexError> {
    let bytes = sql.as_bytes();
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(LexError {
            kind: LexErrorKind::UnexpectedCharacter,
            offset,
        });
    }
    // NUL is excluded above, so 0 unambiguously means "past the end".
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = at(i);
        let fail = |kind| LexError {
            kind,
            offset: start,
        };
        let kind = match c {
            c if is_space(c) => {
                i += 1;
                continue;
            }
            b'-' if at(i + 1) == b'-' => {
                while i < bytes.len() && at(i) != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if at(i + 1) == b'*' => {
                i = skip_block_comment(bytes, i)
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedComment))?;
                continue;
            }
            b'\'' => {
                i = scan_quoted(bytes, i, b'\'')
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedString))?;
                TokenKind::String
            }
            b'e' | b'E' if at(i + 1) == b'\'' => {
                i = scan_escape_string(bytes, i + 1)
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedString))?;
                TokenKind::String
            }
            b'n' | b'N' if at(i + 1) == b'\'' => {
                i = scan_quoted(bytes, i + 1, b'\'')
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedString))?;
                TokenKind::String
            }
            b'u' | b'U' if at(i + 1) == b'&' && at(i + 2) == b'\'' => {
                i = scan_quoted(bytes, i + 2, b'\'')
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedString))?;
                TokenKind::String
            }
            b'u' | b'U' if at(i + 1) == b'&' && at(i + 2) == b'"' => {
                i = scan_identifier(bytes, i + 2).map_err(fail)?;
                TokenKind::QuotedIdentifier
            }
            b'b' | b'B' | b'x' | b'X' if at(i + 1) == b'\'' => {
                let hex = matches!(c, b'x' | b'X');
                i = scan_quoted(bytes, i + 1, b'\'')
                    .ok_or_else(|| fail(LexErrorKind::MalformedBlob))?;
                let body = bytes.get(start + 2..i - 1).unwrap_or(&[]);
                let ok = body.iter().all(|&d| {
                    if hex {
                        d.is_ascii_hexdigit()
                    } else {
                        matches!(d, b'0' | b'1')
                    }
                });
                if !ok {
                    return Err(fail(LexErrorKind::MalformedBlob));
                }
                TokenKind::Blob
            }
            b'"' => {
                i = scan_identifier(bytes, i).map_err(fail)?;
                TokenKind::QuotedIdentifier
            }
            b'$' if at(i + 1).is_ascii_digit() => {
                i += 1;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                if is_id_char(at(i)) {
                    return Err(fail(LexErrorKind::MalformedParameter));
                }
                TokenKind::Parameter
            }
            b'$' => {
                i = scan_dollar_quoted(bytes, i).map_err(fail)?;
                TokenKind::String
            }
            b'0'..=b'9' => {
                i = scan_number(bytes, i).ok_or_else(|| fail(LexErrorKind::MalformedNumber))?;
                TokenKind::Number
            }
            b'.' if at(i + 1).is_ascii_digit() => {
                i = scan_number(bytes, i).ok_or_else(|| fail(LexErrorKind::MalformedNumber))?;
                TokenKind::Number
            }
            b'.' => {
                i += 1;
                TokenKind::Dot
            }
            b'(' => {
                i += 1;
                TokenKind::LeftParen
            }
            b')' => {
                i += 1;
                TokenKind::RightParen
            }
            b',' => {
                i += 1;
                TokenKind::Comma
            }
            b';' => {
                i += 1;
                TokenKind::Semicolon
            }
            b'[' | b']' => {
                i += 1;
                TokenKind::Operator
            }
            b':' => {
                i += if matches!(at(i + 1), b':' | b'=') {
                    2
                } else {
                    1
                };
                TokenKind::Operator
            }
            c if is_id_start(c) => {
                while is_id_char(at(i)) {
                    i += 1;
                }
                TokenKind::Word
            }
            c if is_op_char(c) => {
                i = scan_operator(bytes, i);
                TokenKind::Operator
            }
            _ => return Err(fail(LexErrorKind::UnexpectedCharacter)),
        };
        // Token boundaries are always ASCII bytes or the end of input, hence
        // char boundaries; `get` keeps that a non-panicking certainty.
        let text = sql
            .get(start..i)
            .ok_or_else(|| fail(LexErrorKind::UnexpectedCharacter))?;
        tokens.push(Token {
            kind,
            text,
            offset: start,
        });
    }
    Ok(tokens)
}

/// Skips a possibly nested block comment starting at `/*`; returns the
/// index after its final `*/`.
fn skip_block_comment(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied()) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Scans a literal opened by `quote` at `start` that escapes it by
/// doubling; returns the index just past the closing quote.
fn scan_quoted(bytes: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i) {
            None => return None,
            Some(&b) if b == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// Scans the body of `E'…'` from its quote: a backslash escapes the next
/// byte, `''` is a quote.
fn scan_escape_string(bytes: &[u8], quote_at: usize) -> Option<usize> {
    let mut i = quote_at + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Scans a `"…"` identifier from its quote; `""` inside is one quote, and
/// an empty identifier is an error.
fn scan_identifier(bytes: &[u8], quote_at: usize) -> Result<usize, LexErrorKind> {
    let end =
        scan_quoted(bytes, quote_at, b'"').ok_or(LexErrorKind::UnterminatedQuotedIdentifier)?;
    if end == quote_at + 2 {
        return Err(LexErrorKind::EmptyQuotedIdentifier);
    }
    Ok(end)
}

/// Scans `$tag$ … $tag$` (or `$$ … $$`) from the first `$`.
fn scan_dollar_quoted(bytes: &[u8], start: usize) -> Result<usize, LexErrorKind> {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut i = start + 1;
    if is_id_start(at(i)) {
        while is_id_char(at(i)) && at(i) != b'$' {
            i += 1;
        }
    }
    if at(i) != b'$' {
        return Err(LexErrorKind::MalformedParameter);
    }
    let delimiter = &bytes[start..=i];
    let body = i + 1;
    bytes
        .get(body..)
        .and_then(|rest| {
            rest.windows(delimiter.len())
                .position(|w| w == delimiter)
                .map(|p| body + p + delimiter.len())
        })
        .ok_or(LexErrorKind::UnterminatedString)
}

/// Scans a number as PostgreSQL 16 does: decimal with `_` between digits,
/// `0x`/`0o`/`0b` integers, `.` fraction, exponent. A number running into
/// identifier characters is an error ("trailing junk").
fn scan_number(bytes: &[u8], start: usize) -> Option<usize> {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let digits = |mut i: usize, is_digit: fn(u8) -> bool| loop {
        if is_digit(at(i)) {
            i += 1;
        } else if at(i) == b'_' && is_digit(at(i + 1)) && i > start && is_digit(at(i - 1)) {
            i += 2;
        } else {
            return i;
        }
    };
    let radix: Option<fn(u8) -> bool> = match (at(start), at(start + 1)) {
        (b'0', b'x' | b'X') => Some(|c: u8| c.is_ascii_hexdigit()),
        (b'0', b'o' | b'O') => Some(|c: u8| matches!(c, b'0'..=b'7')),
        (b'0', b'b' | b'B') => Some(|c: u8| matches!(c, b'0' | b'1')),
        _ => None,
    };
    let mut i = start;
    if let Some(is_digit) = radix {
        i += 2;
        // `0x_1F` is allowed: one underscore right after the prefix.
        if at(i) == b'_' {
            i += 1;
        }
        if !is_digit(at(i)) {
            return None;
        }
        i = digits(i, is_digit);
    } else {
        let dec = |c: u8| c.is_ascii_digit();
        i = digits(i, dec);
        if at(i) == b'.' && at(i + 1) != b'.' {
            i += 1;
            i = digits(i, dec);
        }
        if matches!(at(i), b'e' | b'E') {
            let exp = if matches!(at(i + 1), b'+' | b'-') {
                i + 2
            } else {
                i + 1
            };
            if !at(exp).is_ascii_digit() {
                return None;
            }
            i = digits(exp, dec);
        }
    }
    if is_id_char(at(i)) {
        None
    } else {
        Some(i)
    }
}

/// Scans an operator: the longest run of operator characters that does not
/// start a comment, without a trailing `+`/`-` unless the run holds a
/// character of [`is_op_special`].
fn scan_operator(bytes: &[u8], start: usize) -> usize {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut end = start;
    while is_op_char(at(end)) {
        if end > start
            && ((at(end) == b'-' && at(end + 1) == b'-')
                || (at(end) == b'/' && at(end + 1) == b'*'))
        {
            break;
        }
        end += 1;
    }
    let run = &bytes[start..end];
    if run.len() > 1 && !run.iter().any(|&c| is_op_special(c)) {
        while end > start + 1 && matches!(at(end - 1), b'+' | b'-') {
            end -= 1;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;
    use TokenKind as K;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        tokenize_postgres(sql)
            .expect("tokenizes")
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    fn values(sql: &str) -> Vec<(TokenKind, String)> {
        tokenize_postgres(sql)
            .expect("tokenizes")
            .into_iter()
            .map(|t| (t.kind, t.unquoted().into_owned()))
            .collect()
    }

    fn lex_error(sql: &str) -> LexErrorKind {
        tokenize_postgres(sql).expect_err("must not tokenize").kind
    }

    #[test]
    fn dollar_quotes_hide_everything_up_to_their_own_tag() {
        assert_eq!(
            kinds("SELECT $$a; ORDER BY 'x$$, $f$ $$ ; $g$ $f$ FROM t"),
            vec![
                (K::Word, "SELECT"),
                (K::String, "$$a; ORDER BY 'x$$"),
                (K::Comma, ","),
                (K::String, "$f$ $$ ; $g$ $f$"),
                (K::Word, "FROM"),
                (K::Word, "t"),
            ]
        );
        assert_eq!(
            values("$$$$ $_x1$it's$_x1$"),
            vec![(K::String, String::new()), (K::String, "it's".into())]
        );
        // `$` inside an identifier is part of it, not a dollar quote.
        assert_eq!(kinds("a$$b"), vec![(K::Word, "a$$b")]);
        // Tags are case-sensitive.
        assert_eq!(lex_error("$A$ x $a$"), LexErrorKind::UnterminatedString);
        assert_eq!(
            lex_error("$$ never closed"),
            LexErrorKind::UnterminatedString
        );
        assert_eq!(lex_error("$ 1"), LexErrorKind::MalformedParameter);
        assert_eq!(lex_error("$1a"), LexErrorKind::MalformedParameter);
    }

    #[test]
    fn escape_unicode_and_national_strings() {
        assert_eq!(
            values(r"E'it\'s' e'a\\' E'x''y' 'a\' N'n''m' E'\x41\101\u00e9\n'"),
            vec![
                (K::String, "it's".into()),
                (K::String, "a\\".into()),
                (K::String, "x'y".into()),
                (K::String, "a\\".into()),
                (K::String, "n'm".into()),
                (K::String, "AAé\n".into()),
            ]
        );
        // Standard strings have no backslash escapes: `'a\'` ends at the
        // second quote, so this is one string and a word.
        assert_eq!(kinds(r"'a\' b"), vec![(K::String, r"'a\'"), (K::Word, "b")]);
        assert_eq!(lex_error(r"E'it\'s"), LexErrorKind::UnterminatedString);
        assert_eq!(
            values(r#"U&'d\0061t\+000061' U&"i\00e9""x""#),
            vec![
                (K::String, "data".into()),
                (K::QuotedIdentifier, "ié\"x".into()),
            ]
        );
        assert_eq!(
            kinds("B'0101' X'1F' b''"),
            vec![(K::Blob, "B'0101'"), (K::Blob, "X'1F'"), (K::Blob, "b''")]
        );
        assert_eq!(lex_error("B'012'"), LexErrorKind::MalformedBlob);
        assert_eq!(lex_error("X'0G'"), LexErrorKind::MalformedBlob);
        // `e`, `n`, `u` not followed by their quote are words.
        assert_eq!(
            kinds("e n u&x"),
            vec![
                (K::Word, "e"),
                (K::Word, "n"),
                (K::Word, "u"),
                (K::Operator, "&"),
                (K::Word, "x")
            ]
        );
    }

    #[test]
    fn quoted_identifiers_casts_parameters_and_operators() {
        assert_eq!(
            kinds(r#"SELECT "a""b"::text[], $1::int, a->>'k', b @> c, d ?| e FROM "T""#),
            vec![
                (K::Word, "SELECT"),
                (K::QuotedIdentifier, r#""a""b""#),
                (K::Operator, "::"),
                (K::Word, "text"),
                (K::Operator, "["),
                (K::Operator, "]"),
                (K::Comma, ","),
                (K::Parameter, "$1"),
                (K::Operator, "::"),
                (K::Word, "int"),
                (K::Comma, ","),
                (K::Word, "a"),
                (K::Operator, "->>"),
                (K::String, "'k'"),
                (K::Comma, ","),
                (K::Word, "b"),
                (K::Operator, "@>"),
                (K::Word, "c"),
                (K::Comma, ","),
                (K::Word, "d"),
                (K::Operator, "?|"),
                (K::Word, "e"),
                (K::Word, "FROM"),
                (K::QuotedIdentifier, r#""T""#),
            ]
        );
        assert_eq!(
            lex_error(r#"SELECT """#),
            LexErrorKind::EmptyQuotedIdentifier
        );
        assert_eq!(
            lex_error(r#""abc"#),
            LexErrorKind::UnterminatedQuotedIdentifier
        );
        // A trailing `-` is cut off a plain run (`a=-1` is `=` and `-1`), not
        // off a run holding a special character.
        assert_eq!(
            kinds("a=-1 b@-c a[1:2] x:=1"),
            vec![
                (K::Word, "a"),
                (K::Operator, "="),
                (K::Operator, "-"),
                (K::Number, "1"),
                (K::Word, "b"),
                (K::Operator, "@-"),
                (K::Word, "c"),
                (K::Word, "a"),
                (K::Operator, "["),
                (K::Number, "1"),
                (K::Operator, ":"),
                (K::Number, "2"),
                (K::Operator, "]"),
                (K::Word, "x"),
                (K::Operator, ":="),
                (K::Number, "1"),
            ]
        );
        assert_eq!(lex_error("a \\ b"), LexErrorKind::UnexpectedCharacter);
        assert_eq!(lex_error("{"), LexErrorKind::UnexpectedCharacter);
        assert_eq!(lex_error("SELECT 1\0"), LexErrorKind::UnexpectedCharacter);
    }

    #[test]
    fn nested_comments_and_line_comments() {
        assert_eq!(
            kinds("a /* x /* ORDER BY */ still ; comment */ b -- c ; d\ne"),
            vec![(K::Word, "a"), (K::Word, "b"), (K::Word, "e")]
        );
        assert_eq!(
            kinds("a+/*x*/b"),
            vec![(K::Word, "a"), (K::Operator, "+"), (K::Word, "b")]
        );
        assert_eq!(
            kinds("a*--x\nb"),
            vec![(K::Word, "a"), (K::Operator, "*"), (K::Word, "b")]
        );
        assert_eq!(lex_error("/* /* */"), LexErrorKind::UnterminatedComment);
        assert_eq!(kinds("\x0bx\x0c"), vec![(K::Word, "x")]);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            kinds("42 1_000 1.5e3 .5 1. 0x1F 0o17 0b101 0x_ff 2E-3"),
            vec![
                (K::Number, "42"),
                (K::Number, "1_000"),
                (K::Number, "1.5e3"),
                (K::Number, ".5"),
                (K::Number, "1."),
                (K::Number, "0x1F"),
                (K::Number, "0o17"),
                (K::Number, "0b101"),
                (K::Number, "0x_ff"),
                (K::Number, "2E-3"),
            ]
        );
        for bad in ["12abc", "1e", "1__0", "0x", "0b2", "1_"] {
            assert_eq!(lex_error(bad), LexErrorKind::MalformedNumber, "{bad}");
        }
    }
}
