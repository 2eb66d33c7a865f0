//! The bindings as JS sees them: values, `Error` objects with `code`, and
//! no trap on hostile input. Runs under Node and headless Chromium.
//!
//! These live beside the bindings because `mod wasm` is private to the
//! crate, so an integration test under `tests/` cannot reach them; the
//! built package's JS suite (`tests/js/`) covers the same surface from JS.

use js_sys::{Array, Function, Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::cursor::CursorRegistry;
use super::decoder::StreamDecoder;
use super::framer::NdjsonFramer;
use super::hasher::PrefixHasher;
use super::misc::parse_jwt_exp_ms_js;
use super::producer::ChunkProducer;
use crate::core::clock::FakeClock;
use crate::core::close::CloseReason;
use crate::core::config::StreamConfig;
use crate::core::digest::{prefix_hash_of, to_hex, PrefixHasher as CoreHasher};
use crate::core::producer::ChunkProducer as CoreProducer;
use crate::core::protocol::{Column, OpenFrame, StreamEncoder};

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

/// Asserts `err` is a real `Error` carrying `code`.
fn assert_code(err: JsValue, code: &str) -> JsValue {
    assert!(
        err.is_instance_of::<js_sys::Error>(),
        "not an Error: {err:?}"
    );
    assert_eq!(get(&err, "code").as_string().as_deref(), Some(code));
    err
}

fn bytes(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

fn strings(v: JsValue) -> Vec<String> {
    Array::from(&v)
        .iter()
        .map(|s| s.as_string().unwrap())
        .collect()
}

/// An option bag argument from any JS value (the bindings check it).
fn some<T: JsCast>(v: JsValue) -> Option<T> {
    Some(v.unchecked_into())
}

fn opts(js: &str) -> JsValue {
    js_sys::JSON::parse(js).unwrap()
}

#[test]
fn framer_reassembles_utf8_split_anywhere() {
    let text = "{\"s\":\"h\u{e9}llo \u{1F600}\"}\n{\"n\":2}\n";
    let b = text.as_bytes();
    for cut in 0..=b.len() {
        let mut f = NdjsonFramer::new(None).unwrap();
        let mut lines = strings(f.push(bytes(&b[..cut])).unwrap());
        lines.extend(strings(f.push(bytes(&b[cut..])).unwrap()));
        lines.extend(strings(f.finish().unwrap()));
        assert_eq!(lines, vec!["{\"s\":\"h\u{e9}llo \u{1F600}\"}", "{\"n\":2}"]);
    }
}

#[test]
fn framer_errors_are_coded_error_objects() {
    let mut f = NdjsonFramer::new(some(opts(r#"{"maxLineBytes":4}"#))).unwrap();
    let e = assert_code(f.push(bytes(b"123456")).unwrap_err(), "line_too_long");
    assert_eq!(get(&e, "line").as_f64(), Some(1.0));
    assert_eq!(get(&e, "limit").as_f64(), Some(4.0));

    let mut f = NdjsonFramer::new(None).unwrap();
    let e = assert_code(f.push(bytes(b"ok\nbad\xff\n")).unwrap_err(), "invalid_utf8");
    assert_eq!(get(&e, "line").as_f64(), Some(2.0));
    assert_eq!(
        strings(get(&e, "lines")),
        vec!["ok"],
        "earlier lines travel with the error"
    );

    // Wrong types are errors, not traps or silent coercions.
    let mut f = NdjsonFramer::new(None).unwrap();
    assert_code(
        f.push(JsValue::from_str("text")).unwrap_err(),
        "invalid_argument",
    );
    assert_code(
        f.push(JsValue::from_f64(3.0)).unwrap_err(),
        "invalid_argument",
    );
    for bad in [
        r#"{"maxLineBytes":0}"#,
        r#"{"maxLineBytes":-1}"#,
        r#"{"maxLineBytes":1.5}"#,
        r#"{"maxLineBytes":9007199254740991}"#,
    ] {
        assert_code(
            NdjsonFramer::new(some(opts(bad))).err().unwrap(),
            "invalid_argument",
        );
    }
    assert_code(
        NdjsonFramer::new(some(JsValue::from_str("x")))
            .err()
            .unwrap(),
        "invalid_argument",
    );
}

#[test]
fn framer_push_joined_equals_push_for_any_split() {
    let text = "{\"a\":1}\r\n\n{\"s\":\"h\u{e9}llo \u{1F600}\"}\n  \n{\"n\":2}\n{\"c\":3}";
    let b = text.as_bytes();
    for cut in 0..=b.len() {
        let mut f = NdjsonFramer::new(None).unwrap();
        let mut j = NdjsonFramer::new(None).unwrap();
        for part in [&b[..cut], &b[cut..]] {
            let lines = strings(f.push(bytes(part)).unwrap());
            let joined = j.push_joined(bytes(part)).unwrap().as_string().unwrap();
            assert_eq!(joined, lines.join("\n"), "cut at {cut}");
        }
        assert_eq!(strings(j.finish().unwrap()), vec!["{\"c\":3}"]);
    }
    // Errors are push's, with the lines before the bad one.
    let mut j = NdjsonFramer::new(None).unwrap();
    let e = assert_code(
        j.push_joined(bytes(b"ok\nfine\nbad\xff\n")).unwrap_err(),
        "invalid_utf8",
    );
    assert_eq!(get(&e, "line").as_f64(), Some(3.0));
    assert_eq!(strings(get(&e, "lines")), vec!["ok", "fine"]);
    let mut j = NdjsonFramer::new(None).unwrap();
    let e = assert_code(j.push_joined(bytes(b"\xff\n")).unwrap_err(), "invalid_utf8");
    assert_eq!(strings(get(&e, "lines")), Vec::<String>::new());
    assert_code(
        j.push_joined(JsValue::from_str("text")).unwrap_err(),
        "invalid_argument",
    );
}

#[test]
fn hasher_matches_the_core_and_batches_equal_single_updates() {
    let lines = [
        "{\"row\":{\"id\":1}}",
        "{\"row\":{\"s\":\"\u{e9}\"}}",
        "{\"row\":[3]}",
    ];
    let expected = prefix_hash_of(lines);
    let mut one = PrefixHasher::new();
    for l in lines {
        one.update_line(JsValue::from_str(l)).unwrap();
    }
    let mut batch = PrefixHasher::new();
    batch
        .update_lines(super::js::string_array(lines).into())
        .unwrap();
    let mut as_bytes = PrefixHasher::new();
    for l in lines {
        as_bytes.update_line(bytes(l.as_bytes())).unwrap();
    }
    // Lines passed with their newline hash the same, through the slow path.
    let mut with_nl = PrefixHasher::new();
    let nl: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
    with_nl
        .update_lines(super::js::string_array(&nl).into())
        .unwrap();
    for h in [&one, &batch, &as_bytes, &with_nl] {
        assert_eq!(h.hex_digest(), expected);
        assert_eq!(h.rows(), 3.0);
    }
    assert!(one.matches_hex(&expected.to_uppercase()));
    assert!(!one.matches_hex("zz"));

    let cp = one.checkpoint();
    one.update_line(JsValue::from_str("more")).unwrap();
    assert_eq!(cp.hex_digest(), expected);
    assert_ne!(one.hex_digest(), expected);

    let bad: JsValue = Array::of2(&"a".into(), &JsValue::from_f64(1.0)).into();
    assert_code(batch.update_lines(bad).unwrap_err(), "invalid_argument");
    assert_code(
        batch.update_lines("a".into()).unwrap_err(),
        "invalid_argument",
    );
    assert_code(
        batch.update_line(JsValue::NULL).unwrap_err(),
        "invalid_argument",
    );
    assert_eq!(batch.hex_digest(), expected, "failed calls hash nothing");
}

fn encode_stream(rows: std::ops::Range<u64>, cursor: Option<&str>) -> (Vec<u8>, String) {
    encode_stream_at(rows, cursor, 1)
}

/// `encode_stream` with the `open` line's `snapshot_lsn`.
fn encode_stream_at(
    rows: std::ops::Range<u64>,
    cursor: Option<&str>,
    snapshot_lsn: u64,
) -> (Vec<u8>, String) {
    let producer = CoreProducer::new(&StreamConfig::default(), FakeClock::new(0));
    let mut enc = StreamEncoder::new(producer, CoreHasher::new(), 0, "1".repeat(32));
    let mut out: Vec<Vec<u8>> = Vec::new();
    let open = OpenFrame {
        lease: "1".repeat(32),
        snapshot_lsn,
        resumable: cursor.is_some(),
        reason: cursor.is_none().then(|| "aggregate".to_owned()),
        cursor: cursor.map(str::to_owned),
        expires_at_ms: 9,
        columns: vec![Column {
            name: "id".into(),
            decl_type: "INTEGER".into(),
        }],
        after_rows: 0,
        total: None,
    };
    let Ok(()) = enc.open(&open, &mut out);
    for i in rows {
        let v = format!("{{\"id\":{i},\"s\":\"\u{e9}\u{1F600}\"}}");
        let Ok(()) = enc.row_raw(v.as_bytes(), &mut out);
    }
    let Ok(end) = enc.end(CloseReason::Ok, &mut out);
    (out.concat(), end.prefix_hash)
}

fn decode_in_pieces(
    dec: &mut StreamDecoder,
    body: &[u8],
    piece: usize,
) -> Result<(Vec<JsValue>, JsValue), JsValue> {
    let mut rows = Vec::new();
    let mut end = JsValue::UNDEFINED;
    for c in body.chunks(piece) {
        let batch = dec.push(bytes(c))?;
        let parsed = js_sys::JSON::parse(&get(&batch, "rows").as_string().unwrap())?;
        assert_eq!(
            Array::from(&parsed).length() as f64,
            get(&batch, "rowCount").as_f64().unwrap()
        );
        rows.extend(Array::from(&parsed).iter());
        if !get(&batch, "end").is_undefined() {
            end = get(&batch, "end");
        }
    }
    Ok((rows, end))
}

#[test]
fn decoder_verifies_a_stream_split_at_any_size() {
    let (body, hash) = encode_stream(0..50, Some(&"c".repeat(48)));
    for piece in [1, 2, 3, 7, 64, 4096, body.len()] {
        let mut dec = StreamDecoder::new(None).unwrap();
        let (rows, end) = decode_in_pieces(&mut dec, &body, piece).unwrap();
        assert_eq!(rows.len(), 50);
        assert_eq!(get(&rows[49], "id").as_f64(), Some(49.0));
        assert_eq!(get(&rows[0], "s").as_string().unwrap(), "\u{e9}\u{1F600}");
        assert_eq!(get(&end, "prefix_hash").as_string().unwrap(), hash);
        assert!(dec.complete());
        assert_eq!(dec.prefix_hash(), hash);
        assert!(
            dec.begin_resume().unwrap().is_null(),
            "complete streams do not resume"
        );
    }
}

#[test]
fn decoder_digest_is_live_after_every_chunk() {
    // Row lines are hashed in batches inside the verifier; what JS reads
    // after each chunk must still cover exactly the rows handed out so far.
    let (body, hash) = encode_stream(0..40, Some(&"c".repeat(48)));
    let text = std::str::from_utf8(&body).unwrap();
    let row_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("{\"row\":"))
        .collect();
    for piece in [5, 64, 333] {
        let mut dec = StreamDecoder::new(None).unwrap();
        let mut held = 0usize;
        for c in body.chunks(piece) {
            let batch = dec.push(bytes(c)).unwrap();
            held += get(&batch, "rowCount").as_f64().unwrap() as usize;
            assert_eq!(dec.row_count() as usize, held);
            assert_eq!(dec.prefix_hash(), prefix_hash_of(&row_lines[..held]));
        }
        assert_eq!(held, 40);
        assert_eq!(dec.prefix_hash(), hash);
    }
}

#[test]
fn decoder_resumes_without_gap_or_duplicate() {
    let cursor = "c".repeat(48);
    let (body, hash) = encode_stream(0..20, Some(&cursor));
    let text = std::str::from_utf8(&body).unwrap();
    // Cut in the middle of row 8's line (line index 8 after the open line).
    let cut = text.match_indices('\n').nth(8).unwrap().0 + 5;
    let mut dec = StreamDecoder::new(None).unwrap();
    let (first, _) = decode_in_pieces(&mut dec, &body[..cut], 10).unwrap();
    assert_eq!(first.len(), 8);
    let tail = dec.end_of_body().unwrap();
    assert_eq!(
        get(&tail, "rowCount").as_f64(),
        Some(0.0),
        "a cut row is dropped"
    );
    assert!(!dec.complete());
    let req = dec.begin_resume().unwrap();
    assert_eq!(get(&req, "cursor").as_string().unwrap(), cursor);
    assert_eq!(get(&req, "after_rows").as_f64(), Some(8.0));

    // The server's resumed response: open(after_rows 8), rows 8.., end.
    let lines: Vec<&str> = text.lines().collect();
    let open = lines[0].replace("\"after_rows\":0", "\"after_rows\":8");
    let mut resumed = format!("{open}\n");
    for l in &lines[9..] {
        resumed.push_str(l);
        resumed.push('\n');
    }
    let (rest, end) = decode_in_pieces(&mut dec, resumed.as_bytes(), 13).unwrap();
    assert_eq!(rest.len(), 12);
    assert_eq!(get(&rest[0], "id").as_f64(), Some(8.0));
    assert_eq!(get(&end, "prefix_hash").as_string().unwrap(), hash);
    assert_eq!(dec.resumes(), 1);
}

#[test]
fn decoder_refuses_tampered_and_malformed_streams() {
    let (body, _) = encode_stream(0..5, None);
    let mut tampered = body.clone();
    let at = tampered.windows(6).position(|w| w == b"\"id\":3").unwrap();
    tampered[at + 5] = b'4';
    let mut dec = StreamDecoder::new(None).unwrap();
    let err = decode_in_pieces(&mut dec, &tampered, 100).unwrap_err();
    assert_code(err, "digest_mismatch");
    assert_code(dec.push(bytes(b"\n")).unwrap_err(), "digest_mismatch");

    let mut dec = StreamDecoder::new(None).unwrap();
    assert_code(
        dec.push(bytes(b"{\"row\":1}\n")).unwrap_err(),
        "protocol_error",
    );
    let mut dec = StreamDecoder::new(None).unwrap();
    let e = assert_code(dec.push(bytes(b"nope\n")).unwrap_err(), "malformed_line");
    assert_eq!(get(&e, "line").as_f64(), Some(1.0));
    // A non-resumable stream has nothing to resume from.
    let mut dec = StreamDecoder::new(None).unwrap();
    decode_in_pieces(&mut dec, &body[..body.len() / 2], 9).unwrap();
    assert!(dec.begin_resume().unwrap().is_null());
}

fn external_decoder() -> StreamDecoder {
    StreamDecoder::new(some(opts(r#"{"externalHashing":true}"#))).unwrap()
}

/// What JS does with an external-hashing decoder after each call: feed the
/// hash input to its own SHA-256 and report the running digest.
fn report_hashed(dec: &mut StreamDecoder, sha: &mut Sha256) -> Result<(), JsValue> {
    sha.update(dec.hash_input().to_vec());
    dec.input_hashed(&to_hex(&sha.clone().finalize()))
}

/// `decode_in_pieces` for an external-hashing decoder; also returns the
/// concatenated hash input.
fn decode_external(
    dec: &mut StreamDecoder,
    sha: &mut Sha256,
    body: &[u8],
    piece: usize,
) -> Result<(usize, JsValue, Vec<u8>), JsValue> {
    let mut rows = 0;
    let mut end = JsValue::UNDEFINED;
    let mut input = Vec::new();
    for c in body.chunks(piece) {
        let batch = dec.push(bytes(c))?;
        input.extend(dec.hash_input().to_vec());
        report_hashed(dec, sha)?;
        rows += get(&batch, "rowCount").as_f64().unwrap() as usize;
        if !get(&batch, "end").is_undefined() {
            end = get(&batch, "end");
        }
    }
    Ok((rows, end, input))
}

#[test]
fn external_hashing_decoder_hands_out_the_exact_digest_input() {
    let (body, hash) = encode_stream(0..50, Some(&"c".repeat(48)));
    let text = std::str::from_utf8(&body).unwrap();
    let row_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("{\"row\":"))
        .collect();
    for piece in [1, 7, 64, 4096, body.len()] {
        let mut dec = external_decoder();
        assert!(dec.external_hashing());
        let mut sha = Sha256::new();
        let mut held = 0usize;
        let mut input = Vec::new();
        for c in body.chunks(piece) {
            let batch = dec.push(bytes(c)).unwrap();
            held += get(&batch, "rowCount").as_f64().unwrap() as usize;
            input.extend(dec.hash_input().to_vec());
            if get(&batch, "end").is_undefined() {
                report_hashed(&mut dec, &mut sha).unwrap();
                assert_eq!(dec.prefix_hash(), prefix_hash_of(&row_lines[..held]));
            } else {
                assert!(!dec.complete(), "complete only once the digest is checked");
                report_hashed(&mut dec, &mut sha).unwrap();
            }
        }
        assert_eq!(input, row_lines.concat().as_bytes());
        assert!(dec.complete());
        assert_eq!(dec.prefix_hash(), hash);
        assert!(dec.begin_resume().unwrap().is_null());
    }
    // The wasm decoder has no hash input to give.
    let mut dec = StreamDecoder::new(None).unwrap();
    dec.push(bytes(&body[..200])).unwrap();
    assert_eq!(dec.hash_input().length(), 0);
    assert!(!dec.external_hashing());
}

#[test]
fn external_hashing_decoder_refuses_tampered_streams_and_resumes() {
    let (body, _) = encode_stream(0..5, None);
    let mut tampered = body.clone();
    let at = tampered.windows(6).position(|w| w == b"\"id\":3").unwrap();
    tampered[at + 5] = b'4';
    let mut dec = external_decoder();
    let err = decode_external(&mut dec, &mut Sha256::new(), &tampered, 100).unwrap_err();
    assert_code(err, "digest_mismatch");
    assert!(!dec.complete());
    assert_code(dec.push(bytes(b"\n")).unwrap_err(), "digest_mismatch");
    let mut dec = external_decoder();
    assert_code(dec.input_hashed("zz").unwrap_err(), "protocol_error");
    assert_code(
        StreamDecoder::new(some(opts(r#"{"externalHashing":1}"#)))
            .err()
            .unwrap(),
        "invalid_argument",
    );

    let cursor = "c".repeat(48);
    let (body, hash) = encode_stream(0..20, Some(&cursor));
    let text = std::str::from_utf8(&body).unwrap();
    let cut = text.match_indices('\n').nth(8).unwrap().0 + 5;
    let mut dec = external_decoder();
    let mut sha = Sha256::new();
    let (first, _, _) = decode_external(&mut dec, &mut sha, &body[..cut], 10).unwrap();
    assert_eq!(first, 8);
    dec.end_of_body().unwrap();
    report_hashed(&mut dec, &mut sha).unwrap();
    let req = dec.begin_resume().unwrap();
    assert_eq!(get(&req, "after_rows").as_f64(), Some(8.0));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        get(&req, "prefix_hash").as_string().unwrap(),
        prefix_hash_of(&lines[1..9])
    );
    let open = lines[0].replace("\"after_rows\":0", "\"after_rows\":8");
    let mut resumed = format!("{open}\n");
    for l in &lines[9..] {
        resumed.push_str(l);
        resumed.push('\n');
    }
    // A resume is refused while rows are still waiting to be hashed.
    let mut pending = external_decoder();
    pending.push(bytes(&body[..cut])).unwrap();
    assert_code(pending.begin_resume().unwrap_err(), "protocol_error");

    let (rest, end, _) = decode_external(&mut dec, &mut sha, resumed.as_bytes(), 13).unwrap();
    assert_eq!(rest, 12);
    assert_eq!(get(&end, "prefix_hash").as_string().unwrap(), hash);
    assert!(dec.complete());
    assert_eq!(dec.prefix_hash(), hash);
}

#[test]
fn producer_returns_chunks_on_caps_and_reports_totals() {
    let now = Function::new_no_args("return 1000");
    let o = opts(r#"{"bufferBytes":16,"maxRows":100,"maxLatencyMs":50}"#);
    Reflect::set(&o, &"now".into(), &now).unwrap();
    let mut p = ChunkProducer::new(some(o)).unwrap();
    assert_eq!(
        Array::from(&p.push_row("abcdef".into()).unwrap()).length(),
        0
    );
    assert_eq!(p.next_deadline_ms(), Some(1050.0));
    let out = Array::from(&p.push_row(bytes(b"ghijklmno")).unwrap());
    assert_eq!(out.length(), 1);
    let chunk = Uint8Array::from(out.get(0)).to_vec();
    assert_eq!(chunk, b"abcdef\n");
    assert_eq!(p.last_flush().as_string().as_deref(), Some("bytes"));
    let fin = Array::from(&p.finish().unwrap());
    assert_eq!(Uint8Array::from(fin.get(0)).to_vec(), b"ghijklmno\n");
    let t = p.totals().unwrap();
    assert_eq!(get(&t, "rows").as_f64(), Some(2.0));
    assert_eq!(get(&t, "chunks").as_f64(), Some(2.0));
    assert_eq!(get(&t, "bytes").as_f64(), Some(17.0));
}

#[test]
fn a_throwing_clock_becomes_a_coded_error_and_loses_no_chunk() {
    let now = Function::new_no_args("throw new TypeError('clock broke')");
    let o = opts(r#"{"maxRows":1}"#);
    Reflect::set(&o, &"now".into(), &now).unwrap();
    let mut p = ChunkProducer::new(some(o)).unwrap();
    let e = assert_code(p.push_row("r".into()).unwrap_err(), "clock_failed");
    assert!(get(&e, "cause").is_instance_of::<js_sys::TypeError>());
    let chunks = Array::from(&get(&e, "chunks"));
    assert_eq!(Uint8Array::from(chunks.get(0)).to_vec(), b"r\n");

    let o = js_sys::Object::new();
    Reflect::set(&o, &"now".into(), &Function::new_no_args("return 'soon'")).unwrap();
    let mut p = ChunkProducer::new(some(o.into())).unwrap();
    assert_code(p.push_row("r".into()).unwrap_err(), "clock_failed");
    assert_code(
        ChunkProducer::new(some(opts(r#"{"now":5}"#)))
            .err()
            .unwrap(),
        "invalid_argument",
    );
    assert_code(
        ChunkProducer::new(some(opts(r#"{"pages":0}"#)))
            .err()
            .unwrap(),
        "invalid_argument",
    );
}

#[test]
fn cursor_registry_masks_foreign_cursors() {
    let reg = CursorRegistry::new(None).unwrap();
    let info = opts(
        r#"{"tenant":"t","principal":"alice","query":"SELECT 1","snapshotLsn":3,"expiresAtMs":1000}"#,
    );
    let token = reg.register(info, JsValue::from_str("payload")).unwrap();
    assert_eq!(token.len(), 48);
    let alice = opts(r#"{"tenant":"t","principal":"alice"}"#);
    let bob = opts(r#"{"tenant":"t","principal":"bob"}"#);
    let got = reg.resolve(&token, alice.clone(), Some(500.0)).unwrap();
    assert_eq!(get(&got, "payload").as_string().unwrap(), "payload");
    assert_eq!(get(&got, "snapshotLsn").as_f64(), Some(3.0));
    assert_code(
        reg.resolve(&token, bob.clone(), Some(500.0)).unwrap_err(),
        "cursor_not_found",
    );
    assert_code(
        reg.resolve(&token, alice.clone(), Some(1001.0))
            .unwrap_err(),
        "cursor_expired",
    );
    let token2 = reg
        .register(
            opts(r#"{"tenant":"t","principal":"alice","query":"q","expiresAtMs":1e12}"#),
            JsValue::UNDEFINED,
        )
        .unwrap();
    assert_code(
        reg.cancel(&token2, bob, None).unwrap_err(),
        "cursor_not_found",
    );
    reg.cancel(&token2, alice.clone(), None).unwrap();
    assert_code(
        reg.resolve(&token2, alice.clone(), None).unwrap_err(),
        "cursor_cancelled",
    );
    assert_code(
        reg.resolve(&token2, alice, Some(-1.0)).unwrap_err(),
        "invalid_argument",
    );
    assert_code(
        reg.register(opts(r#"{"tenant":"t"}"#), JsValue::UNDEFINED)
            .unwrap_err(),
        "invalid_argument",
    );
}

#[test]
fn jwt_exp_is_read_without_trusting_the_token() {
    // {"alg":"HS256"} . {"exp":1700000000} . sig
    let t = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.sig";
    assert_eq!(parse_jwt_exp_ms_js(t), Some(1_700_000_000_000.0));
    assert_eq!(parse_jwt_exp_ms_js("opaque"), None);
}

#[test]
fn resumability_is_classified_and_a_throwing_callback_is_an_error() {
    use super::resumable::assess_resumability_js;
    let r = assess_resumability_js("SELECT * FROM events LIMIT 5", None).unwrap();
    assert_eq!(get(&r, "resumable").as_bool(), Some(true));
    assert!(get(&r, "reason").is_null());
    assert_eq!(get(&r, "table").as_string().as_deref(), Some("events"));
    assert_eq!(get(&r, "hasLimit").as_bool(), Some(true));

    let r =
        assess_resumability_js("SELECT kind, count(*) FROM events GROUP BY kind", None).unwrap();
    assert_eq!(get(&r, "resumable").as_bool(), Some(false));
    assert_eq!(get(&r, "reason").as_string().as_deref(), Some("group_by"));

    let pk = Function::new_with_args("table", "return table === 't' ? 'id' : undefined");
    let o = js_sys::Object::new();
    Reflect::set(&o, &"integerPrimaryKey".into(), &pk).unwrap();
    let r = assess_resumability_js("SELECT * FROM t ORDER BY id", some(o.into())).unwrap();
    assert_eq!(get(&r, "resumable").as_bool(), Some(true));

    let o = js_sys::Object::new();
    let throws = Function::new_no_args("throw new Error('schema lookup failed')");
    Reflect::set(&o, &"integerPrimaryKey".into(), &throws).unwrap();
    let e = assess_resumability_js("SELECT * FROM t ORDER BY id", some(o.into())).unwrap_err();
    let e = assert_code(e, "callback_failed");
    assert!(get(&e, "cause").is_instance_of::<js_sys::Error>());
}

/// The `message` of an error thrown by the bindings.
fn message(e: &JsValue) -> String {
    get(e, "message").as_string().unwrap()
}

/// Asserts `result` failed with `invalid_argument` and a message naming `key`.
fn assert_names_key<T>(result: Result<T, JsValue>, key: &str) {
    let Err(e) = result else {
        panic!("accepted an option bag with a bad `{key}`")
    };
    let e = assert_code(e, "invalid_argument");
    assert!(
        message(&e).contains(key),
        "`{}` does not name `{key}`",
        message(&e)
    );
}

#[test]
fn option_bags_refuse_unknown_keys_and_wrong_types_naming_the_key() {
    use super::resumable::assess_resumability_js;
    // A misspelt key is refused, not ignored.
    assert_names_key(
        NdjsonFramer::new(some(opts(r#"{"maxLinebytes":4}"#))),
        "maxLinebytes",
    );
    assert_names_key(
        StreamDecoder::new(some(opts(r#"{"externalHashing":false,"extHashing":true}"#))),
        "extHashing",
    );
    assert_names_key(ChunkProducer::new(some(opts(r#"{"rows":7}"#))), "rows");
    assert_names_key(
        CursorRegistry::new(some(opts(r#"{"tombstoneGrace":1}"#))),
        "tombstoneGrace",
    );
    assert_names_key(
        assess_resumability_js("SELECT 1", some(opts(r#"{"integerPrimaryKeys":null}"#))),
        "integerPrimaryKeys",
    );
    let reg = CursorRegistry::new(None).unwrap();
    assert_names_key(
        reg.register(
            opts(r#"{"tenant":"t","principal":"p","query":"q","expiresAtMs":1,"snapshotLSN":2}"#),
            JsValue::UNDEFINED,
        ),
        "snapshotLSN",
    );
    // Wrong types name the key too.
    assert_names_key(
        NdjsonFramer::new(some(opts(r#"{"maxLineBytes":"64"}"#))),
        "maxLineBytes",
    );
    assert_names_key(
        StreamDecoder::new(some(opts(r#"{"externalHashing":1}"#))),
        "externalHashing",
    );
    assert_names_key(
        ChunkProducer::new(some(opts(r#"{"maxRows":1.5}"#))),
        "maxRows",
    );
    assert_names_key(ChunkProducer::new(some(opts(r#"{"now":5}"#))), "now");
    assert_names_key(
        assess_resumability_js("SELECT 1", some(opts(r#"{"integerPrimaryKey":"id"}"#))),
        "integerPrimaryKey",
    );
    assert_names_key(
        reg.register(
            opts(r#"{"tenant":"t","principal":"p","query":"q","firstLease":7,"expiresAtMs":1}"#),
            JsValue::UNDEFINED,
        ),
        "firstLease",
    );
    assert_names_key(
        reg.register(
            opts(r#"{"tenant":"t","principal":"p","query":"q"}"#),
            JsValue::UNDEFINED,
        ),
        "expiresAtMs",
    );
    // A number past 2^53 is not taken as a rounded neighbour.
    assert_names_key(
        CursorRegistry::new(some(opts(r#"{"tombstoneGraceMs":9007199254740993}"#))),
        "tombstoneGraceMs",
    );
    // `null` and `undefined` are absent; a non-object bag is refused.
    let f = NdjsonFramer::new(some(opts(r#"{"maxLineBytes":null}"#))).unwrap();
    assert_eq!(f.max_line_bytes(), 16.0 * 1024.0 * 1024.0);
    NdjsonFramer::new(some(JsValue::UNDEFINED)).unwrap();
    let e = assert_code(
        ChunkProducer::new(some(JsValue::from_f64(4.0)))
            .err()
            .unwrap(),
        "invalid_argument",
    );
    assert!(message(&e).contains("options must be an object"));
    // A scope may carry other keys (a `CursorInfo` is a scope).
    let token = reg
        .register(
            opts(r#"{"tenant":"t","principal":"p","query":"q","expiresAtMs":1e13}"#),
            JsValue::NULL,
        )
        .unwrap();
    let info = reg
        .resolve(&token, opts(r#"{"tenant":"t","principal":"p"}"#), None)
        .unwrap();
    reg.resolve(&token, info, None).unwrap();
}

#[test]
fn integers_past_2_53_reach_js_exactly() {
    // An `open` line whose snapshot_lsn a JS number cannot hold.
    let lsn = (1u64 << 53) + 1;
    let (body, hash) = encode_stream_at(0..3, Some(&"c".repeat(48)), lsn);
    let mut dec = StreamDecoder::new(None).unwrap();
    let batch = dec.push(bytes(&body)).unwrap();
    let open = get(&batch, "open");
    assert!(
        open.is_object() && !open.is_instance_of::<js_sys::Map>(),
        "frames are plain objects"
    );
    let got = get(&open, "snapshot_lsn");
    assert!(got.is_bigint(), "snapshot_lsn is {got:?}, not a bigint");
    assert_eq!(got, JsValue::from(js_sys::BigInt::from(lsn)));
    // Safe integers stay numbers.
    assert_eq!(get(&open, "after_rows").as_f64(), Some(0.0));
    assert_eq!(
        get(&Array::from(&get(&open, "columns")).get(0), "name").as_string(),
        Some("id".to_owned())
    );
    let end = get(&batch, "end");
    assert_eq!(get(&end, "row_count").as_f64(), Some(3.0));
    assert_eq!(get(&end, "prefix_hash").as_string(), Some(hash));

    // A bigint registered with a cursor comes back as that bigint.
    let reg = CursorRegistry::new(None).unwrap();
    let info = opts(r#"{"tenant":"t","principal":"p","query":"q","expiresAtMs":1e13}"#);
    let big = JsValue::from(js_sys::BigInt::from(u64::MAX - 1));
    Reflect::set(&info, &"snapshotLsn".into(), &big).unwrap();
    let token = reg.register(info, JsValue::NULL).unwrap();
    let got = reg
        .resolve(&token, opts(r#"{"tenant":"t","principal":"p"}"#), None)
        .unwrap();
    assert_eq!(get(&got, "snapshotLsn"), big);
    assert_eq!(get(&got, "expiresAtMs").as_f64(), Some(1e13));
}
