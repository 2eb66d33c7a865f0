//! The framer must never panic, never hold more than the line limit, and give
//! the same lines (or the same error) however the input is split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rowstream::core::framer::NdjsonFramer;

fn frame(data: &[u8], cuts: &[usize]) -> Result<Vec<String>, rowstream::FramerError> {
    let mut f = NdjsonFramer::with_max_line_bytes(256);
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts {
        out.extend(f.push_collect(&data[start..c])?);
        assert!(f.pending_bytes() <= 257);
        start = c;
    }
    out.extend(f.push_collect(&data[start..])?);
    out.extend(f.finish_collect()?);
    Ok(out)
}

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (data, raw_cuts) = input;
    let mut cuts: Vec<usize> = raw_cuts.iter().map(|&c| c as usize % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let whole = frame(&data, &[]);
    let split = frame(&data, &cuts);
    assert_eq!(whole, split);
});
