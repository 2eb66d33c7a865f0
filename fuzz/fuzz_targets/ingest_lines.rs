//! Input-stream line parsing (`IngestParser`): never a panic; rows are only
//! accepted between `open` and `end`, with one value per open column; after
//! an error or `end` nothing more is accepted; the row count is exact.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rowstream::core::config::VerifyMode;
use rowstream::core::ingest::{IngestEvent, IngestParser};

fuzz_target!(|input: (bool, &[u8])| {
    let (sha, data) = input;
    let mut p = IngestParser::new(if sha {
        VerifyMode::Sha256
    } else {
        VerifyMode::None
    });
    let mut rows = 0u64;
    let mut opened = false;
    let mut ended = false;
    for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(raw) else {
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match p.accept(line, i as u64 + 1) {
            Ok(IngestEvent::Open(o)) => {
                assert!(!opened);
                opened = true;
                assert_eq!(p.columns(), o.columns.as_slice());
            }
            Ok(IngestEvent::Row(values)) => {
                assert!(opened && !ended);
                assert_eq!(values.len(), p.columns().len());
                rows += 1;
            }
            Ok(IngestEvent::End { row_count, .. }) => {
                assert!(opened && !ended);
                assert_eq!(row_count, rows);
                ended = true;
            }
            Err(e) => {
                assert_eq!(e.line(), i as u64 + 1);
                let _ = e.to_body().to_json();
                break;
            }
        }
        assert_eq!(p.rows(), rows);
    }
    let _ = p.finish();
});
