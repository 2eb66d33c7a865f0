//! Streams a query with `rowstream::client` and prints each row, then the
//! summary (verified digest, resumes).
//!
//! ```text
//! sqlite3 demo.sqlite "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t(name) VALUES ('a'), ('b');"
//! cargo run --features server -- serve --db demo.sqlite --listen 127.0.0.1:8080 &
//! cargo run --example client_stream --features client -- \
//!     http://127.0.0.1:8080 "SELECT * FROM t WHERE id <= 5"
//! ```
//!
//! The token, when the server needs one, comes from `ROWSTREAM_TOKEN`.

use rowstream::client::{Client, Query};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(sql)) = (args.next(), args.next()) else {
        eprintln!("usage: client_stream URL SQL");
        std::process::exit(2);
    };
    let mut builder = Client::builder(url);
    if let Ok(token) = std::env::var("ROWSTREAM_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.build()?;
    let mut rows = client.stream::<serde_json::Value>(Query::new(sql));
    while let Some(row) = rows.next().await {
        println!("{}", row?);
    }
    let s = rows.summary();
    eprintln!(
        "{} rows, verified: {}, prefix_hash {}, resumes {}",
        s.row_count, s.verified, s.prefix_hash, s.resumes
    );
    Ok(())
}
