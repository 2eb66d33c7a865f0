//! Request bodies of `/v1/query/stream` and `/cancel` (JSON, params binding):
//! never a panic, and a body the route accepts has the shape it claims.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rowstream::server::fuzz_api::{parse_request_body, ParsedBody};

fuzz_target!(|data: &[u8]| {
    let stream = parse_request_body(data, false);
    let cancel = parse_request_body(data, true);
    if let Ok(kind) = stream {
        let v: serde_json::Value = serde_json::from_slice(data).expect("accepted bodies are JSON");
        assert!(v.is_object());
        assert_eq!(kind == ParsedBody::Resume, v.get("cursor").is_some());
        if kind == ParsedBody::Fresh {
            assert!(v["query"].is_string());
        }
    }
    if cancel.is_ok() {
        let v: serde_json::Value = serde_json::from_slice(data).expect("accepted bodies are JSON");
        assert!(v["cursor"].is_string());
    }
});
