//! A tokenizer for the SQL dialects the classifier reads.
//!
//! The crate ships in the browser wasm module, so it brings no SQL parser:
//! [`tokenize`] is a small tokenizer for SQLite's dialect that follows
//! SQLite's own `tokenize.c` (string literals with `''` escapes, `"…"`,
//! `` `…` `` and `[…]` identifiers, `x'…'` blobs, numbers with `_`
//! separators, `--` and `/* */` comments, parameters `?`, `?NNN`, `:name`,
//! `@name`, `$name`); [`tokenize_in`] with [`Dialect::Postgres`] reads
//! PostgreSQL's lexical syntax instead (see [`super::postgres`]). Whitespace
//! and comments produce no tokens; every token
//! keeps its exact source text and byte offset, so callers can splice SQL at
//! token boundaries instead of matching substrings.

use std::borrow::Cow;
use std::fmt;

/// The SQL dialect a query is written in: the one switch between SQLite and
/// PostgreSQL tenants, for the tokenizer and the classifier alike.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// SQLite, as `tokenize.c` reads it.
    #[default]
    Sqlite,
    /// PostgreSQL, as `scan.l` reads it (with `standard_conforming_strings`
    /// on, the default since 9.1).
    Postgres,
}

/// Splits `sql` into tokens of `dialect`, dropping whitespace and comments.
///
/// # Errors
///
/// A [`LexError`] for the first token that is unterminated or malformed in
/// that dialect.
pub fn tokenize_in(sql: &str, dialect: Dialect) -> Result<Vec<Token<'_>>, LexError> {
    match dialect {
        Dialect::Sqlite => tokenize(sql),
        Dialect::Postgres => super::postgres::tokenize_postgres(sql),
    }
}

/// The kind of a [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A bare word: a keyword or an unquoted identifier (`SELECT`, `rowid`).
    Word,
    /// A quoted identifier: `"…"`, `` `…` `` or `[…]`; in PostgreSQL `"…"`
    /// or `U&"…"`.
    QuotedIdentifier,
    /// A string literal `'…'`; in PostgreSQL also `E'…'`, `N'…'`, `U&'…'`
    /// and dollar-quoted `$tag$…$tag$`.
    String,
    /// A blob literal `x'…'`; in PostgreSQL a bit string `B'…'` or `X'…'`.
    Blob,
    /// A numeric literal (`42`, `1.5e3`, `.5`, `0x1F`, `1_000`).
    Number,
    /// A bound parameter: `?`, `?NNN`, `:name`, `@name`, `$name`, `#name`;
    /// in PostgreSQL `$1`, `$2`, ….
    Parameter,
    /// An operator such as `=`, `<>`, `||`, `->>` or `*`; in PostgreSQL also
    /// `::`, `:`, `[`, `]` and any run of operator characters (`@>`, `?|`).
    Operator,
    /// `(`
    LeftParen,
    /// `)`
    RightParen,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `;`
    Semicolon,
}

/// One token of SQL source; whitespace and comments produce no tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// What the token is.
    pub kind: TokenKind,
    /// The exact source text, quotes included.
    pub text: &'a str,
    /// Byte offset of the token in the source.
    pub offset: usize,
}

impl<'a> Token<'a> {
    /// Whether this is the bare word `keyword` (ASCII case-insensitive).
    /// Quoted identifiers and literals never match.
    #[must_use]
    pub fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword)
    }

    /// The token's value with quoting removed: quoted identifiers and string
    /// literals lose their delimiters, and a doubled delimiter inside them
    /// stands for one (`"a""b"` is `a"b`, `'it''s'` is `it's`). PostgreSQL's
    /// forms are decoded too: `$tag$…$tag$` loses its tags, `E'…'` its
    /// backslash escapes, `U&'…'`/`U&"…"` their `\XXXX`/`\+XXXXXX` escapes
    /// (with the default escape character; a `UESCAPE` clause is a separate
    /// token and not applied), `N'…'` its prefix. Other tokens are returned
    /// as written.
    #[must_use]
    pub fn unquoted(&self) -> Cow<'a, str> {
        let text = self.text;
        let bytes = text.as_bytes();
        let quote = match (self.kind, bytes.first()) {
            (TokenKind::String, Some(b'\'')) => "'",
            (TokenKind::String, Some(b'$')) => {
                let tag = text[1..].find('$').map_or(text.len(), |i| i + 2);
                let inner = text.get(tag..text.len().saturating_sub(tag));
                return Cow::Borrowed(inner.unwrap_or(""));
            }
            (TokenKind::String, Some(b'e' | b'E')) => {
                return Cow::Owned(unescape_backslashes(inner_of(text, 2)));
            }
            (TokenKind::String, Some(b'n' | b'N')) => {
                return undouble(inner_of(text, 2), "'");
            }
            (TokenKind::String | TokenKind::QuotedIdentifier, Some(b'u' | b'U')) => {
                let quote = if self.kind == TokenKind::String {
                    "'"
                } else {
                    "\""
                };
                let inner = undouble(inner_of(text, 3), quote);
                return match unescape_unicode(&inner) {
                    Some(decoded) => Cow::Owned(decoded),
                    None => inner,
                };
            }
            (TokenKind::QuotedIdentifier, Some(b'"')) => "\"",
            (TokenKind::QuotedIdentifier, Some(b'`')) => "`",
            (TokenKind::QuotedIdentifier, Some(b'[')) => {
                return Cow::Borrowed(inner_of(text, 1));
            }
            _ => return Cow::Borrowed(text),
        };
        undouble(inner_of(text, 1), quote)
    }
}

/// The text between a `prefix`-byte opening (prefix and quote) and the
/// one-byte closing quote.
fn inner_of(text: &str, open: usize) -> &str {
    text.get(open..text.len().saturating_sub(1)).unwrap_or("")
}

/// `inner` with each doubled `quote` standing for one.
fn undouble<'a>(inner: &'a str, quote: &str) -> Cow<'a, str> {
    let doubled = quote.repeat(2);
    if inner.contains(&doubled) {
        Cow::Owned(inner.replace(&doubled, quote))
    } else {
        Cow::Borrowed(inner)
    }
}

/// Decodes the body of a PostgreSQL `E'…'` string: `''`, `\b \f \n \r \t`,
/// octal `\o`, `\oo`, `\ooo`, `\xh`, `\xhh`, `\uXXXX`, `\UXXXXXXXX`, and
/// `\c` for any other `c`. Escapes that do not form a character are kept
/// as written (PostgreSQL would reject them; this is only for display and
/// comparisons).
fn unescape_backslashes(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // `''` inside the literal stands for one quote.
                chars.next_if_eq(&'\'');
                out.push('\'');
            }
            '\\' => {
                let Some(e) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let mut number = |radix: u32, max: usize, first: Option<char>| {
                    let mut digits = String::new();
                    digits.extend(first);
                    while digits.len() < max {
                        match chars.next_if(|d| d.is_digit(radix)) {
                            Some(d) => digits.push(d),
                            None => break,
                        }
                    }
                    u32::from_str_radix(&digits, radix)
                        .ok()
                        .and_then(char::from_u32)
                };
                let decoded = match e {
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    '0'..='7' => number(8, 3, Some(e)),
                    'x' => number(16, 2, None),
                    'u' => number(16, 4, None),
                    'U' => number(16, 8, None),
                    other => Some(other),
                };
                match decoded {
                    Some(d) => out.push(d),
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Decodes `\XXXX`, `\+XXXXXX` and `\\` in a `U&` literal's body; `None`
/// when an escape is malformed.
fn unescape_unicode(inner: &str) -> Option<String> {
    if !inner.contains('\\') {
        return None;
    }
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (len, skip) = if rest.starts_with('\\') {
            out.push('\\');
            rest = &rest[1..];
            continue;
        } else if rest.starts_with('+') {
            (6, 1)
        } else {
            (4, 0)
        };
        let hex = rest.get(skip..skip + len)?;
        let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)?;
        out.push(c);
        rest = &rest[skip + len..];
    }
    out.push_str(rest);
    Some(out)
}

/// What went wrong while tokenizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LexErrorKind {
    /// A `'…` string literal has no closing quote.
    UnterminatedString,
    /// A `"…`, `` `… `` or `[…` identifier has no closing delimiter.
    UnterminatedQuotedIdentifier,
    /// A `/* …` comment has no closing `*/`.
    UnterminatedComment,
    /// A blob literal is unterminated, has an odd number of digits or a
    /// non-hex digit.
    MalformedBlob,
    /// A number runs into identifier characters (`12abc`, `1e`, `1__0`).
    MalformedNumber,
    /// `:`, `@`, `$` or `#` without a name, or an unclosed `$name(…`.
    MalformedParameter,
    /// A character SQLite's tokenizer rejects (`^`, `{`, lone `!`, vertical
    /// tab, NUL, other control characters), or PostgreSQL's (`{`, `\\`
    /// outside a string, NUL, control characters).
    UnexpectedCharacter,
    /// PostgreSQL: a zero-length quoted identifier `""`.
    EmptyQuotedIdentifier,
}

/// A tokenizer error and the byte offset of the token where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LexError {
    /// What went wrong.
    pub kind: LexErrorKind,
    /// Byte offset of the offending token.
    pub offset: usize,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            LexErrorKind::UnterminatedString => "unterminated string literal",
            LexErrorKind::UnterminatedQuotedIdentifier => "unterminated quoted identifier",
            LexErrorKind::UnterminatedComment => "unterminated block comment",
            LexErrorKind::MalformedBlob => "malformed blob literal",
            LexErrorKind::MalformedNumber => "malformed number",
            LexErrorKind::MalformedParameter => "malformed parameter",
            LexErrorKind::UnexpectedCharacter => "unexpected character",
            LexErrorKind::EmptyQuotedIdentifier => "zero-length quoted identifier",
        };
        write!(f, "{what} at byte {}", self.offset)
    }
}

impl std::error::Error for LexError {}

/// SQLite's whitespace: space, tab, newline, form feed, carriage return.
/// (Vertical tab is an illegal character to SQLite.)
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0c | b'\r')
}

/// First character of an identifier: ASCII letter, `_`, or any non-ASCII
/// byte (SQLite treats every byte >= 0x80 as an identifier character, so a
/// word always ends on a UTF-8 character boundary).
pub(super) fn is_id_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// Later characters of an identifier: also digits and `$`.
pub(super) fn is_id_char(c: u8) -> bool {
    is_id_start(c) || c.is_ascii_digit() || c == b'$'
}

/// Splits SQLite SQL into tokens, dropping whitespace and comments.
///
/// Follows SQLite's `tokenize.c`; any input SQLite would reject as an
/// illegal token is an error here, as is an unterminated block comment
/// (which SQLite tolerates) and a NUL byte.
///
/// # Errors
///
/// A [`LexError`] for the first token that is unterminated, malformed or
/// made of characters SQLite does not accept.
pub fn tokenize(sql: &str) -> Result<Vec<Token<'_>>, LexError> {
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
                i += 2;
                loop {
                    if i >= bytes.len() {
                        return Err(fail(LexErrorKind::UnterminatedComment));
                    }
                    if at(i) == b'*' && at(i + 1) == b'/' {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            b'\'' => {
                i = scan_quoted(bytes, i, b'\'')
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedString))?;
                TokenKind::String
            }
            b'"' | b'`' => {
                i = scan_quoted(bytes, i, c)
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedQuotedIdentifier))?;
                TokenKind::QuotedIdentifier
            }
            b'[' => {
                let rest = bytes.get(i + 1..).unwrap_or(&[]);
                let close = rest
                    .iter()
                    .position(|&b| b == b']')
                    .ok_or_else(|| fail(LexErrorKind::UnterminatedQuotedIdentifier))?;
                i += close + 2;
                TokenKind::QuotedIdentifier
            }
            b'x' | b'X' if at(i + 1) == b'\'' => {
                i += 2;
                while at(i).is_ascii_hexdigit() {
                    i += 1;
                }
                if at(i) != b'\'' || (i - start - 2) % 2 != 0 {
                    return Err(fail(LexErrorKind::MalformedBlob));
                }
                i += 1;
                TokenKind::Blob
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
            b'?' => {
                i += 1;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                TokenKind::Parameter
            }
            b':' | b'@' | b'$' | b'#' => {
                i = scan_named_parameter(bytes, i)
                    .ok_or_else(|| fail(LexErrorKind::MalformedParameter))?;
                TokenKind::Parameter
            }
            c if is_id_start(c) => {
                while is_id_char(at(i)) {
                    i += 1;
                }
                TokenKind::Word
            }
            b'-' => {
                i += match (at(i + 1), at(i + 2)) {
                    (b'>', b'>') => 3,
                    (b'>', _) => 2,
                    _ => 1,
                };
                TokenKind::Operator
            }
            b'=' | b'|' => {
                i += if at(i + 1) == c { 2 } else { 1 };
                TokenKind::Operator
            }
            b'<' => {
                i += if matches!(at(i + 1), b'=' | b'>' | b'<') {
                    2
                } else {
                    1
                };
                TokenKind::Operator
            }
            b'>' => {
                i += if matches!(at(i + 1), b'=' | b'>') {
                    2
                } else {
                    1
                };
                TokenKind::Operator
            }
            b'!' if at(i + 1) == b'=' => {
                i += 2;
                TokenKind::Operator
            }
            b'+' | b'*' | b'/' | b'%' | b'&' | b'~' => {
                i += 1;
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

/// Scans a literal delimited by `quote` that escapes it by doubling; returns
/// the index just past the closing quote.
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

/// Scans a number as SQLite does (hex, decimal, fraction, exponent, `_`
/// between digits); a number running into identifier characters is illegal.
fn scan_number(bytes: &[u8], start: usize) -> Option<usize> {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let digits = |mut i: usize, hex: bool| {
        let is_digit = |c: u8| {
            if hex {
                c.is_ascii_hexdigit()
            } else {
                c.is_ascii_digit()
            }
        };
        loop {
            if is_digit(at(i)) {
                i += 1;
            } else if at(i) == b'_' && is_digit(at(i + 1)) {
                i += 2;
            } else {
                return i;
            }
        }
    };
    let mut i = start;
    if at(i) == b'0' && matches!(at(i + 1), b'x' | b'X') && at(i + 2).is_ascii_hexdigit() {
        i = digits(i + 2, true);
    } else {
        i = digits(i, false);
        if at(i) == b'.' {
            i = digits(i + 1, false);
        }
        if matches!(at(i), b'e' | b'E')
            && (at(i + 1).is_ascii_digit()
                || (matches!(at(i + 1), b'+' | b'-') && at(i + 2).is_ascii_digit()))
        {
            i = digits(i + 2, false);
        }
    }
    if is_id_char(at(i)) {
        None
    } else {
        Some(i)
    }
}

/// Scans `:name`, `@name`, `$name`, `#name`, including SQLite's TCL-style
/// `$a::b` segments and a `$name(suffix)`.
fn scan_named_parameter(bytes: &[u8], start: usize) -> Option<usize> {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut i = start + 1;
    let mut name_len = 0usize;
    loop {
        let c = at(i);
        if is_id_char(c) {
            name_len += 1;
            i += 1;
        } else if c == b'(' && name_len > 0 {
            i += 1;
            while i < bytes.len() && !is_space(at(i)) && at(i) != b')' {
                i += 1;
            }
            if at(i) == b')' {
                i += 1;
                break;
            }
            return None;
        } else if c == b':' && at(i + 1) == b':' {
            i += 2;
        } else {
            break;
        }
    }
    (name_len > 0).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        tokenize(sql)
            .expect("tokenizes")
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    fn lex_error(sql: &str) -> LexErrorKind {
        tokenize(sql).expect_err("must not tokenize").kind
    }

    use TokenKind as K;

    #[test]
    fn tokenizes_a_simple_select() {
        assert_eq!(
            kinds("SELECT a, b.c FROM t WHERE x >= 1;"),
            vec![
                (K::Word, "SELECT"),
                (K::Word, "a"),
                (K::Comma, ","),
                (K::Word, "b"),
                (K::Dot, "."),
                (K::Word, "c"),
                (K::Word, "FROM"),
                (K::Word, "t"),
                (K::Word, "WHERE"),
                (K::Word, "x"),
                (K::Operator, ">="),
                (K::Number, "1"),
                (K::Semicolon, ";"),
            ]
        );
    }

    #[test]
    fn comments_and_whitespace_produce_no_tokens() {
        assert_eq!(
            kinds("a -- UNION\n/* GROUP\n BY */\tb\r\n\x0cc -- trailing"),
            vec![(K::Word, "a"), (K::Word, "b"), (K::Word, "c")]
        );
        assert_eq!(kinds("/**/a/* */"), vec![(K::Word, "a")]);
        assert_eq!(kinds("--only a comment"), vec![]);
        assert_eq!(kinds("a--b\nc"), vec![(K::Word, "a"), (K::Word, "c")]);
        // `/*` inside a line comment and `--` inside a block comment are text.
        assert_eq!(
            kinds("-- /*\na /* -- */ b"),
            vec![(K::Word, "a"), (K::Word, "b")]
        );
    }

    #[test]
    fn literals_and_quoted_identifiers_keep_escapes() {
        let toks = tokenize(r#"'it''s' "a""b" `c``d` [e"f] 'UNION'"#).unwrap();
        let got: Vec<_> = toks
            .iter()
            .map(|t| (t.kind, t.unquoted().into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (K::String, "it's".to_string()),
                (K::QuotedIdentifier, "a\"b".to_string()),
                (K::QuotedIdentifier, "c`d".to_string()),
                (K::QuotedIdentifier, "e\"f".to_string()),
                (K::String, "UNION".to_string()),
            ]
        );
        assert!(!toks[4].is_keyword("UNION"));
        assert_eq!(kinds("''"), vec![(K::String, "''")]);
        assert_eq!(kinds("''''"), vec![(K::String, "''''")]);
        assert_eq!(
            kinds("'a'/*x*/'b'"),
            vec![(K::String, "'a'"), (K::String, "'b'")]
        );
    }

    #[test]
    fn blobs_numbers_and_parameters() {
        assert_eq!(
            kinds("x'0aFF' X'' 42 1.5e3 .5 1. 0x1F 1_000 2e-3 3E+2"),
            vec![
                (K::Blob, "x'0aFF'"),
                (K::Blob, "X''"),
                (K::Number, "42"),
                (K::Number, "1.5e3"),
                (K::Number, ".5"),
                (K::Number, "1."),
                (K::Number, "0x1F"),
                (K::Number, "1_000"),
                (K::Number, "2e-3"),
                (K::Number, "3E+2"),
            ]
        );
        assert_eq!(
            kinds("? ?12 :name @n1 $x $a::b $f(x) #p"),
            vec![
                (K::Parameter, "?"),
                (K::Parameter, "?12"),
                (K::Parameter, ":name"),
                (K::Parameter, "@n1"),
                (K::Parameter, "$x"),
                (K::Parameter, "$a::b"),
                (K::Parameter, "$f(x)"),
                (K::Parameter, "#p"),
            ]
        );
        // `x` not followed by a quote is an ordinary word.
        assert_eq!(kinds("x xy"), vec![(K::Word, "x"), (K::Word, "xy")]);
    }

    #[test]
    fn operators() {
        let ops = "|| -> ->> <= >= == != <> << >> = < > + - * / % & | ~";
        let got = kinds(ops);
        assert!(got.iter().all(|(k, _)| *k == K::Operator));
        let texts: Vec<_> = got.iter().map(|(_, t)| *t).collect();
        assert_eq!(texts, ops.split(' ').collect::<Vec<_>>());
        assert_eq!(
            kinds("a->>'$.x'"),
            vec![(K::Word, "a"), (K::Operator, "->>"), (K::String, "'$.x'")]
        );
        assert_eq!(
            kinds("1-2"),
            vec![(K::Number, "1"), (K::Operator, "-"), (K::Number, "2")]
        );
    }

    #[test]
    fn words_follow_sqlite_identifier_rules() {
        assert_eq!(
            kinds("_a1$b 名前 naïve"),
            vec![(K::Word, "_a1$b"), (K::Word, "名前"), (K::Word, "naïve")]
        );
        let t = &tokenize("SeLeCt").unwrap()[0];
        assert!(t.is_keyword("SELECT"));
        assert!(!tokenize("\"select\"").unwrap()[0].is_keyword("SELECT"));
        let t = tokenize("  é").unwrap();
        assert_eq!(t[0].offset, 2);
    }

    #[test]
    fn unterminated_and_illegal_input_is_an_error() {
        assert_eq!(lex_error("'abc"), LexErrorKind::UnterminatedString);
        assert_eq!(lex_error("'it''"), LexErrorKind::UnterminatedString);
        assert_eq!(
            lex_error("\"abc"),
            LexErrorKind::UnterminatedQuotedIdentifier
        );
        assert_eq!(
            lex_error("`abc``"),
            LexErrorKind::UnterminatedQuotedIdentifier
        );
        assert_eq!(
            lex_error("[abc"),
            LexErrorKind::UnterminatedQuotedIdentifier
        );
        assert_eq!(lex_error("a /* b"), LexErrorKind::UnterminatedComment);
        assert_eq!(lex_error("/*/"), LexErrorKind::UnterminatedComment);
        assert_eq!(lex_error("x'abc'"), LexErrorKind::MalformedBlob);
        assert_eq!(lex_error("x'zz'"), LexErrorKind::MalformedBlob);
        assert_eq!(lex_error("x'ab"), LexErrorKind::MalformedBlob);
        assert_eq!(lex_error("12abc"), LexErrorKind::MalformedNumber);
        assert_eq!(lex_error("1e"), LexErrorKind::MalformedNumber);
        assert_eq!(lex_error("1__0"), LexErrorKind::MalformedNumber);
        assert_eq!(lex_error("0x"), LexErrorKind::MalformedNumber);
        assert_eq!(lex_error(": a"), LexErrorKind::MalformedParameter);
        assert_eq!(lex_error("@"), LexErrorKind::MalformedParameter);
        assert_eq!(lex_error("$f(x"), LexErrorKind::MalformedParameter);
        assert_eq!(lex_error("a ^ b"), LexErrorKind::UnexpectedCharacter);
        assert_eq!(lex_error("!a"), LexErrorKind::UnexpectedCharacter);
        assert_eq!(lex_error("a\x0bb"), LexErrorKind::UnexpectedCharacter);
        let err = tokenize("SELECT 1\0; DROP TABLE t").unwrap_err();
        assert_eq!(err.kind, LexErrorKind::UnexpectedCharacter);
        assert_eq!(err.offset, 8);
        assert_eq!(err.to_string(), "unexpected character at byte 8");
    }
}
