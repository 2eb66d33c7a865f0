//! Creates the demo database (see `rowstream::server::demo`), with a progress bar.
//!
//! ```sh
//! cargo run --release --features server --example demo_db -- --db demo-data/demo.db --rows 1000000
//! ```
//!
//! With `--if-missing`, an existing complete database with the same row count
//! and schema version is kept as is.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "demo_db", about = "Create rowstream's demo SQLite database.")]
struct Args {
    /// Where to write the database (replaced atomically when complete).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,

    /// Rows of the `events` table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,

    /// Keep an existing complete database with the same row count.
    #[arg(long)]
    if_missing: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.if_missing && rowstream::server::demo::is_current(&args.db, args.rows) {
        eprintln!(
            "demo_db: {} is up to date ({} events)",
            args.db.display(),
            args.rows
        );
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("demo_db: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_pct = u64::MAX;
    let mut last_decile = 0;
    let result = rowstream::server::demo::generate(&args.db, args.rows, |done, total| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if pct == last_pct {
            return;
        }
        last_pct = pct;
        let mut err = std::io::stderr().lock();
        if tty {
            const WIDTH: u64 = 40;
            let filled = (pct * WIDTH / 100) as usize;
            let _ = write!(
                err,
                "\r  generating [{}{}] {pct:>3}%  {done}/{total} events  {:.1}s ",
                "█".repeat(filled),
                "░".repeat(WIDTH as usize - filled),
                started.elapsed().as_secs_f64()
            );
            if done == total {
                let _ = writeln!(err);
            }
        } else if pct / 10 != last_decile {
            last_decile = pct / 10;
            let _ = writeln!(err, "  generating: {pct}% ({done}/{total} events)");
        }
    });
    match result {
        Ok(()) => {
            let size = std::fs::metadata(&args.db).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "demo_db: wrote {} ({} events, {:.1} MiB) in {:.1}s",
                args.db.display(),
                args.rows,
                size as f64 / 1_048_576.0,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo_db: {e}");
            ExitCode::FAILURE
        }
    }
}
