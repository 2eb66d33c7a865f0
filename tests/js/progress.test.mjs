// PROTOCOL 1.1 in streamQuery, against the in-memory reference server:
// `count` → summary.totalRows, `progressMs` → onProgress from progress lines
// (found across every chunk split), heartbeat and progress lines never
// hashed or counted, the fallback for a 1.0 server, and idleTimeoutMs.
// server11.test.mjs runs the same against the real server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rowstream, collect } from "./helpers.mjs";
import { referenceServer, sampleRows } from "./reference-server.mjs";

const { streamQuery, RowstreamError } = rowstream;
const URL_ = "http://rowstream.test/v1/query/stream";
const ROWS = sampleRows(60);
const query = (server, extra = {}) =>
  streamQuery(URL_, { query: "SELECT * FROM t", fetch: server.fetch, backoffMs: 1, ...extra });

test("count: exact gives summary.totalRows, repeated through a resume", async () => {
  const server = referenceServer({ rows: ROWS, faults: [{ cutAt: 900 }] });
  const stream = query(server, { count: "exact" });
  assert.deepEqual(await collect(stream), ROWS);
  const s = stream.summary;
  assert.equal(s.resumes, 1);
  assert.equal(s.totalRows, 60);
  assert.equal(s.totalRowsExact, true);
  assert.deepEqual(s.ignoredOptions, []);
  assert.deepEqual(server.log[0].body, { query: "SELECT * FROM t", count: "exact" });
  assert.equal(server.log[1].body.count, undefined, "a resume asks nothing new");
});

test('count: "estimated" may be unknown (null, not exact); "none" is not sent', async () => {
  const server = referenceServer({ rows: ROWS, total: null });
  const stream = query(server, { count: "estimated" });
  await collect(stream);
  assert.equal(stream.summary.totalRows, null);
  assert.equal(stream.summary.totalRowsExact, false);
  const guess = referenceServer({ rows: ROWS, total: 75 });
  const s2 = query(guess, { count: "estimated" });
  await collect(s2);
  assert.equal(s2.summary.totalRows, 75);
  assert.equal(s2.summary.totalRowsExact, false);
  const none = referenceServer({ rows: ROWS });
  const s3 = query(none, { count: "none" });
  await collect(s3);
  assert.deepEqual(none.log[0].body, { query: "SELECT * FROM t" });
  assert.equal(s3.summary.totalRows, null);
});

test("progress and heartbeat lines are neither rows nor hashed; onProgress gets every progress line", async () => {
  const server = referenceServer({ rows: ROWS, heartbeatEvery: 7 });
  const seen = [];
  const stream = query(server, { progressMs: 100, count: "exact", onProgress: (p) => seen.push(p) });
  assert.deepEqual(await collect(stream), ROWS);
  const s = stream.summary;
  assert.equal(s.verified, true);
  assert.equal(s.rowCount, 60);
  assert.equal(s.prefixHash, server.expectedHash());
  assert.equal(server.log[0].body.progress_ms, 100);
  const fromServer = seen.filter((p) => p.source === "server");
  assert.deepEqual(fromServer.map((p) => p.rows), [10, 20, 30, 40, 50]);
  assert.ok(fromServer.every((p) => p.totalRows === 60 && p.totalRowsExact === true));
  assert.ok(fromServer.every((p, i) => i === 0 || p.bytes > fromServer[i - 1].bytes));
  assert.ok(seen.every((p) => Number.isInteger(p.elapsedMs) && p.elapsedMs >= 0));
});

test("progress lines are found whatever the chunk boundaries", async () => {
  const server = referenceServer({ rows: ROWS, heartbeatEvery: 3 });
  // Ask once so that the reference server's body has progress lines.
  await collect(query(server, { progressMs: 100 }));
  const body = server.bodyBytes();
  const splitFetch = (size) => async () =>
    new Response(
      new ReadableStream({
        start(c) {
          for (let i = 0; i < body.length; i += size) c.enqueue(body.slice(i, i + size));
          c.close();
        },
      }),
      { status: 200, headers: { "content-type": "application/x-ndjson" } },
    );
  for (let size = 1; size <= 97; size += size < 20 ? 1 : 11) {
    const seen = [];
    const stream = streamQuery(URL_, { query: "q", fetch: splitFetch(size), progressMs: 100, onProgress: (p) => seen.push(p) });
    assert.equal((await collect(stream)).length, 60);
    assert.equal(stream.summary.prefixHash, server.expectedHash(), `split every ${size} bytes`);
    assert.deepEqual(seen.filter((p) => p.source === "server").map((p) => p.rows), [10, 20, 30, 40, 50], `split every ${size} bytes`);
  }
});

test("without progressMs, onProgress is called once per network chunk with the client's figures", async () => {
  const server = referenceServer({ rows: ROWS });
  const seen = [];
  const stream = query(server, { onProgress: (p) => seen.push({ ...p }) });
  await collect(stream);
  assert.equal(seen.length, stream.summary.chunks);
  assert.ok(seen.every((p) => p.source === "client" && p.totalRows === null));
  assert.ok(seen.every((p, i) => i === 0 || (p.rows >= seen[i - 1].rows && p.bytes > seen[i - 1].bytes)));
  assert.equal(seen.at(-1).rows, 60);
  assert.equal(seen.at(-1).bytes, stream.summary.bytes);
});

test("a throwing onProgress ends the iteration with its error", async () => {
  const server = referenceServer({ rows: ROWS });
  const boom = new Error("boom");
  await assert.rejects(collect(query(server, { onProgress: () => { throw boom; } })), (e) => e === boom);
});

test("a 1.0 server refusing count and progress_ms as unknown fields: asked again without them, still verified", async () => {
  const server = referenceServer({ rows: ROWS, protocol: "1.0" });
  const seen = [];
  const stream = query(server, { count: "exact", progressMs: 100, onProgress: (p) => seen.push(p) });
  assert.deepEqual(await collect(stream), ROWS);
  const s = stream.summary;
  assert.equal(s.verified, true);
  assert.deepEqual(s.ignoredOptions, ["count", "progressMs"]);
  assert.equal(s.totalRows, null);
  assert.deepEqual(server.log.map((l) => Object.keys(l.body)), [["query", "count", "progress_ms"], ["query", "progress_ms"], ["query"]]);
  assert.ok(seen.length > 0 && seen.every((p) => p.source === "client"));
});

test("other 400 bad_request answers are not retried", async () => {
  const server = referenceServer({ rows: ROWS, faults: [{ refuse: [400, "bad_request"] }] });
  await assert.rejects(collect(query(server, { count: "exact" })), (e) => e instanceof RowstreamError && e.code === "bad_request" && e.status === 400);
  assert.equal(server.log.length, 1);
});

test("idleTimeoutMs: a body that stalls is taken as dropped and resumed; a slow consumer is not", async () => {
  const server = referenceServer({ rows: ROWS, faults: [{ stallAt: 700 }] });
  const stream = query(server, { idleTimeoutMs: 150 });
  const t0 = Date.now();
  assert.deepEqual(await collect(stream), ROWS);
  assert.equal(stream.summary.resumes, 1);
  assert.ok(stream.summary.resumedFrom[0] > 0);
  assert.ok(Date.now() - t0 < 5000);

  const calm = referenceServer({ rows: ROWS.slice(0, 12) });
  const slow = query(calm, { idleTimeoutMs: 50 });
  for await (const _ of slow) await new Promise((r) => setTimeout(r, 30));
  assert.equal(slow.summary.resumes, 0, "time spent by the consumer is not idle time");
  assert.equal(slow.summary.verified, true);
});

test("idleTimeoutMs on a stream without a cursor: a clear stream_interrupted", async () => {
  const server = referenceServer({ rows: ROWS, resumable: false, faults: [{ stallAt: 700 }] });
  await assert.rejects(
    collect(query(server, { idleTimeoutMs: 100 })),
    (e) => e instanceof RowstreamError && e.code === "stream_interrupted" && /idleTimeoutMs/.test(e.message),
  );
});

test("bad 1.1 options are TypeErrors", () => {
  for (const bad of [{ count: "approx" }, { progressMs: 0 }, { progressMs: 1.5 }, { idleTimeoutMs: -1 }, { onProgress: 1 }]) {
    assert.throws(() => streamQuery(URL_, { query: "q", ...bad }), TypeError, JSON.stringify(bad));
  }
});
