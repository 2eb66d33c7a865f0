//! The state file of `rowstream export` (`FILE.partial.state`).
//!
//! Two fixed-size slots of one line each, written in turn: a save is one
//! `write` of [`SLOT`] bytes at the older slot's offset, so it is cheap
//! enough for every network chunk, and a save cut half-way (power loss)
//! leaves the other slot whole. Each slot is a JSON record, a tab and a
//! check (the first 16 hex of the SHA-256 of the JSON), padded with
//! spaces; the valid slot with the higher `seq` is the state.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::digest::sha256_hex;

/// Bytes per slot.
pub(crate) const SLOT: usize = 1024;

/// Version of the record.
const VERSION: u32 = 1;

/// One saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    /// Record version.
    pub v: u32,
    /// Save counter.
    pub seq: u64,
    /// What the export is (server, query, params, shape, format), hashed.
    pub fingerprint: String,
    /// The stream's cursor (`None`: not resumable).
    pub cursor: Option<String>,
    /// Complete rows in `FILE.partial`.
    pub rows: u64,
    /// Bytes of `FILE.partial` holding them (header included).
    pub bytes: u64,
    /// `HasherState::to_bytes` of those rows, hex.
    pub hasher: String,
}

impl StateRecord {
    pub(crate) fn new(fingerprint: String) -> StateRecord {
        StateRecord {
            v: VERSION,
            seq: 0,
            fingerprint,
            cursor: None,
            rows: 0,
            bytes: 0,
            hasher: String::new(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_string(self).expect("a state record serialises");
        let check = &sha256_hex(json.as_bytes())[..16];
        let mut slot = format!("{json}\t{check}").into_bytes();
        slot.resize(SLOT - 1, b' ');
        slot.push(b'\n');
        slot
    }

    fn decode(slot: &[u8]) -> Option<StateRecord> {
        let text = std::str::from_utf8(slot).ok()?.trim_end();
        let (json, check) = text.rsplit_once('\t')?;
        if sha256_hex(json.as_bytes())[..16] != *check {
            return None;
        }
        let r: StateRecord = serde_json::from_str(json).ok()?;
        (r.v == VERSION).then_some(r)
    }
}

/// The open state file.
#[derive(Debug)]
pub(crate) struct StateFile {
    file: File,
    seq: u64,
}

impl StateFile {
    /// Creates (or empties) the state file.
    pub(crate) fn create(path: &Path) -> std::io::Result<StateFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(StateFile { file, seq: 0 })
    }

    /// Opens an existing state file and reads its latest valid record.
    pub(crate) fn open(path: &Path) -> std::io::Result<(StateFile, Option<StateRecord>)> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let latest = bytes
            .chunks(SLOT)
            .take(2)
            .filter_map(StateRecord::decode)
            .max_by_key(|r| r.seq);
        let seq = latest.as_ref().map_or(0, |r| r.seq);
        Ok((StateFile { file, seq }, latest))
    }

    /// Saves `record` (its `seq` is set) into the older slot.
    pub(crate) fn save(&mut self, record: &mut StateRecord) -> std::io::Result<()> {
        self.seq += 1;
        record.seq = self.seq;
        let slot = (self.seq % 2) * SLOT as u64;
        self.file.seek(SeekFrom::Start(slot))?;
        self.file.write_all(&record.encode())
    }
}

/// Reads the latest valid record of a state file (for tests and tools).
pub fn read_state(path: &Path) -> std::io::Result<Option<(Option<String>, u64, u64)>> {
    let (_, r) = StateFile::open(path)?;
    Ok(r.map(|r| (r.cursor, r.rows, r.bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_whole_slot_wins() {
        let dir = std::env::temp_dir().join(format!("rowstream-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let mut f = StateFile::create(&path).unwrap();
        let mut r = StateRecord::new("f".into());
        for rows in 1..=5 {
            r.rows = rows;
            r.bytes = rows * 10;
            f.save(&mut r).unwrap();
        }
        let (_, got) = StateFile::open(&path).unwrap();
        assert_eq!(got.unwrap().rows, 5);
        // A torn last save (slot of seq 5 = offset SLOT) leaves seq 4.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (mut f, got) = StateFile::open(&path).unwrap();
        let mut got = got.unwrap();
        assert_eq!((got.rows, got.seq), (4, 4));
        got.rows = 9;
        f.save(&mut got).unwrap();
        let (_, again) = StateFile::open(&path).unwrap();
        assert_eq!(again.unwrap().rows, 9);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
