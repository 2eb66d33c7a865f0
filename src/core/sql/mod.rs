//! SQL text handling shared by the classifier and the server's rewrites:
//! a tokenizer per dialect, never a parser.

pub mod postgres;
pub mod tokenizer;

pub use tokenizer::{tokenize, tokenize_in, Dialect, LexError, LexErrorKind, Token, TokenKind};
