// streamQuery against the in-memory reference server: verification, resume,
// cancellation and error surfacing, with faults injected precisely.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rowstream, collect, prng } from "./helpers.mjs";
import { referenceServer, sampleRows } from "./reference-server.mjs";

const { streamQuery, RowstreamError } = rowstream;

/** The protocol digest of these rows' lines (shape object). */
function digestOf(rows) {
  const h = new rowstream.PrefixHasher();
  h.updateLines(rows.map((r) => JSON.stringify({ row: r })));
  const d = h.hexDigest();
  h.free();
  return d;
}
const URL_ = "http://rowstream.test/v1/query/stream";
const ROWS = sampleRows(60);

// Every behaviour holds whichever SHA-256 the client uses: node:crypto (the
// default in Node) or the wasm decoder's own (what browsers use).
const MODES = ["native", "wasm"];

/** Registers `fn` once per hashing mode; `fn` gets a `query` bound to it. */
function both(name, fn) {
  for (const hash of MODES) {
    const query = (server, extra = {}) =>
      streamQuery(URL_, { query: "SELECT * FROM t", fetch: server.fetch, backoffMs: 1, token: "tok", hash, ...extra });
    test(`${name} [hash: ${hash}]`, () => fn(query, hash));
  }
}

both("a complete stream is yielded and verified, with its summary", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const stream = query(server);
  assert.deepEqual(await collect(stream), ROWS);
  const s = stream.summary;
  assert.equal(s.verified, true);
  assert.equal(s.rowCount, 60);
  assert.equal(s.prefixHash, server.expectedHash());
  assert.equal(s.resumes, 0);
  assert.equal(s.bytes, server.bodyLength());
  assert.ok(s.chunks > 5);
  assert.deepEqual(s.columns.map((c) => c.name), ["id", "name", "s"]);
  assert.equal(s.resumable, true);
  assert.equal(s.endReason, "ok");
  assert.equal(s.hash, hash);
  assert.equal(server.log[0].authorization, "Bearer tok");
  assert.deepEqual(server.log[0].body, { query: "SELECT * FROM t" });
  assert.equal(server.cancelled, false, "a completed stream is not cancelled");
});

both('shape "array" yields arrays ordered as the columns', async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const stream = query(server, { shape: "array" });
  const rows = await collect(stream);
  assert.deepEqual(rows, ROWS.map((r) => Object.values(r)));
  assert.equal(stream.summary.prefixHash, server.expectedHash("array"));
});

both("cut bodies and network errors are resumed: no gap, no duplicate", async (query, hash) => {
  const rnd = prng(11);
  for (let round = 0; round < 20; round++) {
    const faults = Array.from({ length: 1 + (round % 4) }, () =>
      rnd() < 0.5 ? { cutAt: 300 + Math.floor(rnd() * 900) } : { failAt: 300 + Math.floor(rnd() * 900) },
    );
    const server = referenceServer({ rows: ROWS, faults });
    const stream = query(server);
    assert.deepEqual(await collect(stream), ROWS, JSON.stringify(faults));
    const s = stream.summary;
    assert.equal(s.verified, true);
    assert.equal(s.resumes, faults.length);
    assert.equal(s.prefixHash, server.expectedHash());
    const resumes = server.log.filter((r) => r.body.cursor !== undefined);
    assert.deepEqual(resumes.map((r) => r.body.after_rows), s.resumedFrom);
    for (const r of resumes) {
      assert.equal(r.body.cursor, server.cursor);
      assert.equal(r.body.prefix_hash, digestOf(ROWS.slice(0, r.body.after_rows)));
    }
    assert.ok(s.resumedFrom.every((n, i) => i === 0 || n >= s.resumedFrom[i - 1]));
  }
});

both("a flipped byte in a row is a digest_mismatch, and the cursor is cancelled", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, faults: [{ flipAt: 0 }] });
  const len = server.bodyLength();
  // Flip a letter of a row value (inside "row-NN") far from control lines.
  const text = new TextDecoder().decode((await (await referenceServer({ rows: ROWS }).fetch(URL_, { body: '{"query":"q"}' })).arrayBuffer()));
  const at = new TextEncoder().encode(text.slice(0, text.indexOf('"row-30"') + 2)).length;
  assert.ok(at > 0 && at < len);
  const tampered = referenceServer({ rows: ROWS, faults: [{ flipAt: at }] });
  await assert.rejects(collect(query(tampered)), (e) => e instanceof RowstreamError && e.code === "digest_mismatch");
  assert.equal(tampered.cancelled, true);
});

both("a non-resumable stream that breaks fails with stream_interrupted and the reason", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, resumable: false, reason: "group_by", faults: [{ failAt: 500 }] });
  const stream = query(server);
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const r of stream) seen.push(r);
    })(),
    (e) => e instanceof RowstreamError && e.code === "stream_interrupted" && /group_by/.test(e.message) && e.details.reason === "group_by",
  );
  assert.ok(seen.length > 0 && seen.length < ROWS.length);
  assert.deepEqual(seen, ROWS.slice(0, seen.length), "what was yielded is a correct prefix");
  assert.equal(server.log.filter((r) => r.body.cursor !== undefined).length, 0, "no resume attempted");
});

both("refusals surface with the server's code, status and details", async (query, hash) => {
  const server = referenceServer({
    rows: ROWS,
    faults: [{ refuse: [429, "principal_stream_quota_exhausted", { limit: 2, current: 2 }, { "retry-after": "1" }] }],
  });
  await assert.rejects(collect(query(server)), (e) => {
    assert.ok(e instanceof RowstreamError);
    assert.equal(e.code, "principal_stream_quota_exhausted");
    assert.equal(e.status, 429);
    assert.deepEqual(e.details, { limit: 2, current: 2 });
    assert.equal(e.retryAfterMs, 1000);
    return true;
  });
});

both("a cursor error on resume surfaces with its code", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, faults: [{ cutAt: 700 }, { refuse: [410, "cursor_expired", {}] }] });
  await assert.rejects(collect(query(server)), (e) => e instanceof RowstreamError && e.code === "cursor_expired" && e.status === 410);
});

both("429 on a resume is retried within the budget", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, faults: [{ cutAt: 700 }, { refuse: [429, "server_stream_capacity_exhausted", { limit: 1, current: 1 }] }] });
  const stream = query(server);
  assert.deepEqual(await collect(stream), ROWS);
  assert.equal(stream.summary.resumes, 2);
});

both("a fresh request that fails before the open line is simply retried", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, faults: [{ failAt: 0 }, { cutAt: 20 }] });
  const stream = query(server);
  assert.deepEqual(await collect(stream), ROWS);
  assert.equal(stream.summary.resumes, 0);
  assert.equal(server.log.length, 3);
  assert.ok(server.log.every((r) => r.body.query === "SELECT * FROM t"));
});

both("giving up after maxRetries attempts without progress", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, faults: [{ cutAt: 700 }, { failAt: 10 }, { failAt: 10 }, { failAt: 10 }] });
  await assert.rejects(collect(query(server, { maxRetries: 2 })), (e) => e instanceof RowstreamError && e.code === "stream_interrupted" && /2 retries/.test(e.message));
});

both("in-band errors and early ends are errors with their codes", async (query, hash) => {
  const a = referenceServer({ rows: ROWS, faults: [{ inBandError: ["resource_limit_exceeded", "too big"] }] });
  await assert.rejects(collect(query(a)), (e) => e instanceof RowstreamError && e.code === "resource_limit_exceeded" && e.message === "too big");
  const b = referenceServer({ rows: ROWS, faults: [{ endReason: "snapshot_expired" }] });
  await assert.rejects(collect(query(b)), (e) => e.code === "snapshot_expired");
});

both("abort stops reading, rejects with the signal's reason and cancels the cursor", async (query, hash) => {
  const server = referenceServer({ rows: ROWS, faults: [{ stallAt: 600 }] });
  const ac = new AbortController();
  const stream = query(server, { signal: ac.signal });
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const r of stream) {
        seen.push(r);
        if (seen.length === 3) setTimeout(() => ac.abort(), 5);
      }
    })(),
    (e) => e.name === "AbortError",
  );
  const cancel = server.log.find((r) => r.url.endsWith("/cancel"));
  assert.deepEqual(cancel?.body, { cursor: server.cursor });
  assert.equal(server.cancelled, true);
  assert.equal(stream.summary.verified, false);
});

both("breaking out of the loop early cancels the cursor; an already aborted signal never fetches", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  for await (const r of query(server)) {
    if (r.id === 5) break;
  }
  assert.equal(server.cancelled, true);

  const idle = referenceServer({ rows: ROWS });
  await assert.rejects(collect(query(idle, { signal: AbortSignal.abort() })), (e) => e.name === "AbortError");
  assert.equal(idle.log.length, 0);
});

both("bigint: true yields exact integers through streamQuery", async (query, hash) => {
  const rows = [{ id: 1, big: "9223372036854775807" }];
  const server = referenceServer({ rows });
  // The reference server writes strings; swap in a raw 64-bit literal.
  const raw = server.fetch;
  const fetch = async (url, init) => {
    const res = await raw(url, init);
    if (url.endsWith("/cancel")) return res;
    const text = (await res.text()).replace('"9223372036854775807"', "9223372036854775807");
    const h = new rowstream.PrefixHasher();
    const lines = text.trim().split("\n");
    for (const l of lines) if (l.startsWith('{"row"')) h.updateLine(l);
    const fixed = lines.map((l) => (l.startsWith('{"end"') ? l.replace(/"prefix_hash":"[0-9a-f]+"/, `"prefix_hash":"${h.hexDigest()}"`) : l)).join("\n") + "\n";
    return new Response(fixed, { status: 200 });
  };
  const exact = await collect(streamQuery(URL_, { query: "q", fetch, bigint: true, hash }));
  assert.equal(exact[0].big, 9223372036854775807n);
  const rounded = await collect(streamQuery(URL_, { query: "q", fetch, hash }));
  assert.equal(rounded[0].big, 9223372036854775807);
});

test("options are checked and a stream iterates once", () => {
  assert.throws(() => streamQuery(URL_, {}), TypeError);
  assert.throws(() => streamQuery(URL_, { query: "q", shape: "table" }), TypeError);
  assert.throws(() => streamQuery(URL_, { query: "q", maxRetries: -1 }), TypeError);
  assert.throws(() => streamQuery(URL_, { query: "q", hash: "sha1" }), TypeError);
  const s = streamQuery(URL_, { query: "q", fetch: referenceServer({ rows: ROWS }).fetch });
  s[Symbol.asyncIterator]();
  assert.throws(() => s[Symbol.asyncIterator](), (e) => e.code === "already_iterated");
});

both("abort cancels at once, even while the consumer is busy between rows", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const ac = new AbortController();
  const it = query(server, { signal: ac.signal })[Symbol.asyncIterator]();
  await it.next();
  ac.abort();
  // The consumer has not called next() again, yet the cancel is on its way.
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.cancelled, true);
  await assert.rejects(it.next(), (e) => e.name === "AbortError");
  assert.equal(server.log.filter((r) => r.url.endsWith("/cancel")).length, 1, "cancel is sent once");
});

both("next() calls made without waiting are served in order, then done; return() mid-chunk cancels", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const it = query(server)[Symbol.asyncIterator]();
  // More calls in flight than rows, across chunk boundaries and the end.
  const all = await Promise.all(Array.from({ length: ROWS.length + 3 }, () => it.next()));
  assert.deepEqual(all.slice(0, ROWS.length).map((r) => r.value), ROWS);
  assert.ok(all.slice(0, ROWS.length).every((r) => r.done === false));
  assert.deepEqual(all.slice(ROWS.length), [{ value: undefined, done: true }, { value: undefined, done: true }, { value: undefined, done: true }]);
  assert.equal(server.cancelled, false);

  const other = referenceServer({ rows: ROWS });
  const it2 = query(other)[Symbol.asyncIterator]();
  assert.equal(it2[Symbol.asyncIterator](), it2);
  assert.deepEqual((await it2.next()).value, ROWS[0]);
  assert.deepEqual((await it2.next()).value, ROWS[1]);
  assert.deepEqual(await it2.return(), { value: undefined, done: true });
  assert.equal(other.cancelled, true, "stopping between rows of a chunk cancels the cursor");
  assert.deepEqual(await it2.next(), { value: undefined, done: true }, "no row after return()");
});

both("the summary is live: rowCount and prefixHash cover the rows received so far", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const stream = query(server);
  let checked = 0;
  let yielded = 0;
  for await (const _ of stream) {
    yielded += 1;
    const s = stream.summary;
    assert.ok(s.rowCount >= yielded);
    if (yielded % 10 === 0) {
      const h = new rowstream.PrefixHasher();
      h.updateLines(ROWS.slice(0, s.rowCount).map((r) => JSON.stringify({ row: r })));
      assert.equal(s.prefixHash, h.hexDigest());
      h.free();
      checked += 1;
    }
  }
  assert.ok(checked >= 5);
});

both("params are sent as given, BigInt values as exact integer literals", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const raw = [];
  const fetch = (url, init) => {
    raw.push(init.body);
    return server.fetch(url, init);
  };
  await collect(query(server, { fetch, params: [9223372036854775807n, "x", 1.5, null, { n: -12345678901234567890n }] }));
  assert.equal(raw[0], '{"query":"SELECT * FROM t","params":[9223372036854775807,"x",1.5,null,{"n":-12345678901234567890}]}');
  await collect(query(server, { fetch, params: { a: 1 } }));
  assert.equal(raw.at(-1), '{"query":"SELECT * FROM t","params":{"a":1}}');
});

both("a wrong digest in the end line is a digest_mismatch after the rows of earlier chunks", async (query, hash) => {
  for (const forged of ["0".repeat(64), digestOf(ROWS.slice(1)), "not-hex"]) {
    const server = referenceServer({ rows: ROWS });
    const fetch = async (url, init) => {
      const res = await server.fetch(url, init);
      if (url.endsWith("/cancel")) return res;
      const text = (await res.text()).replace(/"prefix_hash":"[0-9a-f]+"/, `"prefix_hash":"${forged}"`);
      // Small chunks up to row 55's line; rows 55.. and the end line in the last one.
      const enc = new TextEncoder();
      const lines = text.split("\n");
      const head = enc.encode(lines.slice(0, 56).join("\n") + "\n");
      const tail = enc.encode(lines.slice(56).join("\n"));
      return new Response(
        new ReadableStream({
          start(c) {
            for (let i = 0; i < head.length; i += 200) c.enqueue(head.slice(i, i + 200));
            c.enqueue(tail);
            c.close();
          },
        }),
        { status: 200 },
      );
    };
    const stream = query(server, { fetch });
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const r of stream) seen.push(r);
      })(),
      (e) => e instanceof RowstreamError && e.code === "digest_mismatch",
      forged,
    );
    // The rows of the chunks before the one with the end line, never more.
    assert.deepEqual(seen, ROWS.slice(0, 55));
    assert.equal(stream.summary.verified, false);
    assert.equal(stream.summary.hash, hash);
  }
});

test("in Node the default hashing is node:crypto's, over exactly the row lines", async (t) => {
  const crypto = process.getBuiltinModule?.("node:crypto");
  if (crypto === undefined) {
    t.skip("no process.getBuiltinModule in this Node");
    return;
  }
  const proto = Object.getPrototypeOf(crypto.createHash("sha256"));
  const update = proto.update;
  let hashed = 0;
  proto.update = function (data, ...rest) {
    hashed += data.length;
    return update.call(this, data, ...rest);
  };
  const rowBytes = ROWS.reduce((n, r) => n + new TextEncoder().encode(JSON.stringify({ row: r })).length, 0);
  try {
    const server = referenceServer({ rows: ROWS });
    const stream = streamQuery(URL_, { query: "q", fetch: server.fetch });
    assert.deepEqual(await collect(stream), ROWS);
    assert.equal(stream.summary.hash, "native");
    assert.equal(stream.summary.verified, true);
    assert.equal(hashed, rowBytes, "node:crypto hashed every row byte once");
    hashed = 0;
    const wasm = streamQuery(URL_, { query: "q", fetch: referenceServer({ rows: ROWS }).fetch, hash: "wasm" });
    assert.deepEqual(await collect(wasm), ROWS);
    assert.equal(wasm.summary.hash, "wasm");
    assert.equal(hashed, 0, 'hash: "wasm" does not touch node:crypto');
  } finally {
    proto.update = update;
  }
});

both("an end line without its newline still completes the stream, verified", async (query, hash) => {
  const server = referenceServer({ rows: ROWS });
  const fetch = async (url, init) => {
    const res = await server.fetch(url, init);
    if (url.endsWith("/cancel")) return res;
    const text = (await res.text()).trimEnd();
    assert.ok(text.endsWith("}") && text.slice(text.lastIndexOf("\n") + 1).startsWith('{"end":'));
    return new Response(text, { status: 200 });
  };
  const stream = query(server, { fetch });
  assert.deepEqual(await collect(stream), ROWS);
  assert.equal(stream.summary.verified, true);
  assert.equal(stream.summary.hash, hash);
  assert.equal(stream.summary.prefixHash, server.expectedHash());
  assert.equal(stream.summary.resumes, 0);
});
