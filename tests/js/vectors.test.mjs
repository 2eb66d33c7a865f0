// The shared known-answer vectors of tests/vectors/, checked through the
// built package (and SHA-256 digests against node:crypto independently).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { rowstream, vectors, encoder } from "./helpers.mjs";

const { PrefixHasher, assessResumability, StreamDecoder } = rowstream;

test("digest vectors: every prefix, per line, batched and as bytes", () => {
  const cases = vectors("digests.json");
  assert.ok(cases.length >= 5);
  for (const c of cases) {
    const single = new PrefixHasher();
    const bytes = new PrefixHasher();
    const sha = createHash("sha256");
    assert.equal(single.hexDigest(), c.prefix_hashes[0], `${c.name}: empty prefix`);
    c.lines.forEach((line, k) => {
      single.updateLine(line);
      bytes.updateLine(encoder.encode(line));
      sha.update(line, "utf8");
      assert.equal(single.hexDigest(), c.prefix_hashes[k + 1], `${c.name}: rows 0..${k + 1}`);
      assert.equal(sha.copy().digest("hex"), c.prefix_hashes[k + 1], `${c.name}: node:crypto`);
    });
    const batch = new PrefixHasher();
    batch.updateLines(c.lines);
    for (const h of [single, bytes, batch]) {
      assert.equal(h.hexDigest(), c.prefix_hash, c.name);
      assert.equal(h.rows, c.row_count);
      assert.ok(h.matchesHex(c.prefix_hash.toUpperCase()));
      h.free();
    }
  }
});

test("digest vectors: a decoded stream ends verified on the vector's hash", () => {
  for (const c of vectors("digests.json")) {
    const open = { open: { lease: "a".repeat(32), snapshot_lsn: 1, resumable: false, reason: "test", cursor: null, expires_at_ms: 0, columns: [], after_rows: 0 } };
    const end = { end: { reason: "ok", row_count: c.row_count, prefix_hash: c.prefix_hash, lease: "a".repeat(32), bytes: 0 } };
    const body = [JSON.stringify(open), ...c.lines, JSON.stringify(end)].join("\n") + "\n";
    const d = new StreamDecoder();
    const batch = d.push(encoder.encode(body));
    assert.equal(batch.rowCount, c.row_count, c.name);
    assert.equal(batch.end.prefix_hash, c.prefix_hash);
    assert.ok(d.complete);
    d.free();
  }
});

test("digest vectors: a decoder with external hashing hands out exactly the digest input", () => {
  for (const c of vectors("digests.json")) {
    const open = { open: { lease: "a".repeat(32), snapshot_lsn: 1, resumable: false, reason: "test", cursor: null, expires_at_ms: 0, columns: [], after_rows: 0 } };
    const end = { end: { reason: "ok", row_count: c.row_count, prefix_hash: c.prefix_hash, lease: "a".repeat(32), bytes: 0 } };
    const body = encoder.encode([JSON.stringify(open), ...c.lines, JSON.stringify(end)].join("\n") + "\n");
    for (const step of [1, 5, body.length]) {
      const d = new StreamDecoder({ externalHashing: true });
      assert.equal(d.externalHashing, true);
      const sha = createHash("sha256");
      let rows = 0;
      for (let i = 0; i < body.length; i += step) {
        const batch = d.push(body.subarray(i, i + step));
        rows += batch.rowCount;
        sha.update(d.hashInput());
        assert.equal(d.complete, false);
        d.inputHashed(sha.copy().digest("hex"));
        assert.equal(d.prefixHash, c.prefix_hashes[rows], `${c.name}: rows 0..${rows}`);
      }
      assert.ok(d.complete, c.name);
      d.free();
    }
    // A wrong digest reported for the same rows is a mismatch.
    const d = new StreamDecoder({ externalHashing: true });
    d.push(body);
    assert.throws(() => d.inputHashed("0".repeat(64)), (e) => e.code === "digest_mismatch");
    assert.equal(d.complete, false);
    d.free();
  }
});

test("classifier vectors: assessResumability agrees with every case", () => {
  const cases = vectors("classifier.json");
  assert.ok(cases.length > 50);
  for (const c of cases) {
    const ipk = c.integer_primary_key;
    const options = ipk
      ? { integerPrimaryKey: (table) => (table === ipk.table ? ipk.column : undefined) }
      : undefined;
    const r = assessResumability(c.sql, options);
    const what = `${c.sql} (${c.note})`;
    assert.equal(r.resumable, c.resumable, what);
    assert.equal(r.reason, c.reason, what);
    if ("table" in c) assert.equal(r.table, c.table, what);
    if ("has_limit" in c) assert.equal(r.hasLimit, c.has_limit, what);
  }
});

test("a throwing integerPrimaryKey callback becomes a coded Error", () => {
  const boom = new Error("schema lookup failed");
  assert.throws(
    () => assessResumability("SELECT * FROM t ORDER BY id", { integerPrimaryKey: () => { throw boom; } }),
    (e) => e instanceof Error && e.code === "callback_failed" && e.cause === boom,
  );
});

test("framing vectors: every two-way split and byte by byte give the same lines or error", () => {
  const { NdjsonFramer } = rowstream;
  const cases = vectors("framing.json");
  assert.ok(cases.length >= 6);
  const frame = (pieces, max) => {
    const f = new NdjsonFramer(max === undefined ? undefined : { maxLineBytes: max });
    const lines = [];
    try {
      for (const p of pieces) lines.push(...f.push(p));
      lines.push(...f.finish());
      return { lines, error: undefined };
    } catch (e) {
      assert.ok(e instanceof Error && typeof e.code === "string");
      lines.push(...(e.lines ?? []));
      return { lines, error: { code: e.code, line: e.line } };
    } finally {
      f.free();
    }
  };
  for (const c of cases) {
    const input = Uint8Array.from(Buffer.from(c.input_hex, "hex"));
    const want = { lines: c.lines, error: c.error };
    assert.deepEqual(frame(Array.from(input, (b) => Uint8Array.of(b)), c.max_line_bytes), want, `${c.name}: byte by byte`);
    for (let i = 0; i <= input.length; i++) {
      assert.deepEqual(frame([input.subarray(0, i), input.subarray(i)], c.max_line_bytes), want, `${c.name}: split at ${i}`);
    }
  }
});
