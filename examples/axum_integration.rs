//! Streaming rowstream NDJSON from your own axum app.
//!
//! ```sh
//! cargo run --features server --example axum_integration
//! curl -N http://127.0.0.1:3000/squares
//! curl -N http://127.0.0.1:3000/people
//! ```
//!
//! `/squares` streams an iterator of serializable rows; `/people` streams a
//! SQLite query. Both send the `open` line, chunked rows, the prefix digest
//! and the `end` line, and stop producing when the client disconnects.

use axum::routing::get;
use axum::Router;
use rowstream::server::integration::{rows_response, sqlite_response, Shape, StreamOptions};
use rusqlite::Connection;

#[derive(serde::Serialize)]
struct Square {
    n: u64,
    square: u64,
}

async fn squares() -> axum::response::Response {
    let rows = (1..=100_000u64).map(|n| Square { n, square: n * n });
    rows_response(rows, &["n", "square"], StreamOptions::default())
}

async fn people() -> axum::response::Response {
    let conn = Connection::open_in_memory().expect("in-memory database");
    conn.execute_batch(
        "CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT, born INTEGER);
         INSERT INTO people(name, born) VALUES ('Ada', 1815), ('Grace', 1906), ('Edsger', 1930);",
    )
    .expect("schema");
    let opts = StreamOptions {
        shape: Shape::Array,
        ..StreamOptions::default()
    };
    sqlite_response(
        conn,
        "SELECT id, name, born FROM people WHERE born > ?1 ORDER BY id",
        vec![1800.into()],
        opts,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/squares", get(squares))
        .route("/people", get(people));
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
