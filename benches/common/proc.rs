//! Process helpers shared by the benches (`#[path = "common/proc.rs"] mod
//! proc_util;`): a shell command's output, CPU time from `/proc`, and the
//! release `rowstream serve` as a child process.
#![allow(dead_code)] // each bench uses the part it needs

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The trimmed standard output of `sh -c cmd` (empty when it fails).
pub fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// CPU seconds (user + system) of a process, `self` or `thread-self`, from
/// `/proc/…/stat`.
pub fn cpu_s(which: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clk_tck()
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clk_tck() -> f64 {
    static T: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *T.get_or_init(|| sh("getconf CLK_TCK").parse().unwrap_or(100.0))
}

/// `bin serve` on a free loopback port for `db` (open auth, audit log to
/// /dev/null, `extra` arguments after), and the address it printed.
pub fn spawn_serve(bin: &str, db: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--audit-log",
            "/dev/null",
            "--db",
        ])
        .arg(db)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rowstream serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("listening on")
        .parse()
        .expect("addr");
    (child, addr)
}
