// Framing through the built package: the lines never depend on how the
// bytes were split, multi-byte UTF-8 included.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rowstream, encoder, splitAt, streamOf, collect, prng } from "./helpers.mjs";

const { NdjsonFramer, NdjsonDecoderStream, RowstreamError, StreamDecoder, ChunkProducer, PrefixHasher } = rowstream;

const TEXT =
  '{"s":"h\u00e9llo \u{1F600} \u4e16\u754c"}\r\n\n{"id":2,"e":"\u00e9\u00e8\u00ea"}\n{"id":3,"z":"\u{1F980}"}';
const EXPECTED = [{ s: "h\u00e9llo \u{1F600} \u4e16\u754c" }, { id: 2, e: "\u00e9\u00e8\u00ea" }, { id: 3, z: "\u{1F980}" }];

test("NdjsonDecoderStream: every two-way split gives the same values", async () => {
  const bytes = encoder.encode(TEXT);
  for (let i = 0; i <= bytes.length; i++) {
    const out = await collect(streamOf(splitAt(bytes, [i])).pipeThrough(new NdjsonDecoderStream()));
    assert.deepEqual(out, EXPECTED, `split at ${i}`);
  }
});

test("NdjsonDecoderStream: random many-way splits, one byte at a time included", async () => {
  const bytes = encoder.encode(TEXT);
  const rnd = prng(42);
  for (let round = 0; round < 200; round++) {
    const cuts = [...new Set(Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => Math.floor(rnd() * bytes.length)))].sort((a, b) => a - b);
    const out = await collect(streamOf(splitAt(bytes, cuts)).pipeThrough(new NdjsonDecoderStream()));
    assert.deepEqual(out, EXPECTED, `cuts ${cuts}`);
  }
  const single = Array.from(bytes, (b) => Uint8Array.of(b));
  assert.deepEqual(await collect(streamOf(single).pipeThrough(new NdjsonDecoderStream())), EXPECTED);
});

test("NdjsonFramer: a character split across pushes is reassembled", () => {
  const bytes = encoder.encode("\u{1F600}\n");
  const f = new NdjsonFramer();
  assert.deepEqual(f.push(bytes.subarray(0, 1)), []);
  assert.deepEqual(f.push(bytes.subarray(1, 3)), []);
  assert.equal(f.pendingBytes, 3);
  assert.deepEqual(f.push(bytes.subarray(3)), ["\u{1F600}"]);
  assert.deepEqual(f.finish(), []);
  f.free();
});

test("framing errors are coded: invalid UTF-8, overlong lines, bad input types", async () => {
  const f = new NdjsonFramer({ maxLineBytes: 8 });
  assert.throws(() => f.push(encoder.encode("1234567890")), (e) => e instanceof Error && e.code === "line_too_long" && e.line === 1 && e.limit === 8);
  const g = new NdjsonFramer();
  assert.throws(() => g.push(Uint8Array.of(0x6f, 0x6b, 0x0a, 0xff, 0x0a)), (e) => e.code === "invalid_utf8" && e.line === 2 && e.lines.length === 1 && e.lines[0] === "ok");
  assert.throws(() => g.push("not bytes"), (e) => e.code === "invalid_argument");
  assert.throws(() => new NdjsonFramer({ maxLineBytes: -1 }), (e) => e.code === "invalid_argument");
  // An ArrayBuffer is accepted as well.
  assert.deepEqual(new NdjsonFramer().push(encoder.encode("a\n").buffer), ["a"]);

  const bad = streamOf([Uint8Array.of(0x22, 0xc3), Uint8Array.of(0x28, 0x22, 0x0a)]).pipeThrough(new NdjsonDecoderStream());
  await assert.rejects(collect(bad), (e) => e instanceof RowstreamError && e.code === "invalid_utf8");
  const notJson = streamOf([encoder.encode("{}\n{nope}\n")]).pipeThrough(new NdjsonDecoderStream());
  await assert.rejects(collect(notJson), (e) => e instanceof RowstreamError && e.code === "malformed_line" && e.details.line === 2);
});

/** A whole response body made with the package's own ChunkProducer. */
function producedBody(rows, { cursor = "c".repeat(48), pages = 1 } = {}) {
  const p = new ChunkProducer({ pages, maxRows: 7 });
  const h = new PrefixHasher();
  const chunks = [];
  chunks.push(...p.pushControl(JSON.stringify({ open: { lease: "1".repeat(32), snapshot_lsn: 1, resumable: true, cursor, expires_at_ms: 0, columns: [{ name: "s", type: "TEXT" }], after_rows: 0 } })));
  for (const r of rows) {
    const line = JSON.stringify({ row: r });
    h.updateLine(line);
    chunks.push(...p.pushRow(line));
  }
  chunks.push(...p.pushControl(JSON.stringify({ end: { reason: "ok", row_count: rows.length, prefix_hash: h.hexDigest(), lease: "1".repeat(32), bytes: 0 } })));
  chunks.push(...p.finish());
  const t = p.totals;
  assert.equal(t.rows, rows.length);
  assert.ok(chunks.every((c) => c[c.length - 1] === 0x0a), "a chunk ends on a line boundary");
  const body = new Uint8Array(t.bytes);
  let o = 0;
  for (const c of chunks) {
    body.set(c, o);
    o += c.length;
  }
  return { body, chunks, hash: h.hexDigest() };
}

test("StreamDecoder: ChunkProducer output verifies whatever the re-chunking", () => {
  const rows = Array.from({ length: 300 }, (_, i) => ({ id: i, s: `\u00e9\u{1F600}${"x".repeat(i % 50)}` }));
  const { body, chunks, hash } = producedBody(rows);
  assert.ok(chunks.length > 10, "several chunks");
  const rnd = prng(7);
  for (let round = 0; round < 30; round++) {
    const d = new StreamDecoder();
    const got = [];
    let o = 0;
    while (o < body.length) {
      const n = 1 + Math.floor(rnd() * 700);
      const b = d.push(body.subarray(o, o + n));
      got.push(...JSON.parse(b.rows));
      o += n;
    }
    assert.deepEqual(got, rows);
    assert.ok(d.complete);
    assert.equal(d.prefixHash, hash);
    d.free();
  }
});
