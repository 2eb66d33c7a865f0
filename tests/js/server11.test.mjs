// streamQuery's PROTOCOL 1.1 features against a REAL rowstream server
// (ROWSTREAM_BIN), through the fault-injecting proxy, over every coding
// Node's fetch decodes. Tests marked [1.1] need a server that accepts
// `count` / `progress_ms` and sends progress and heartbeat lines; against a
// 1.0 server they are skipped (the probe below says which one runs), and
// the 1.0 fallback is tested instead.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { rowstream, collect, prng } from "./helpers.mjs";
import { BIN, TOKEN, makeDatabase, startServer, startProxy } from "./server-harness.mjs";

const { streamQuery, RowstreamError } = rowstream;
const ROWS = 3000;
const BIG_ROWS = 100_000;
const SEED = Number(process.env.ROWSTREAM_TEST_SEED ?? Date.now() % 100_000);
const CODINGS = ["identity", "gzip", "br"];

/** Whether the server at `url` takes the 1.1 request fields. */
async function speaks11(url) {
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ query: "SELECT 1", count: "exact", progress_ms: 1000 }),
  });
  await res.body?.cancel();
  return res.ok;
}

if (!BIN) {
  test("real-server 1.1 suite", { skip: "ROWSTREAM_BIN is not set" }, () => {});
} else {
  describe(`real server, PROTOCOL 1.1 client features (${BIN}, seed ${SEED})`, () => {
    let fixture;
    let server;
    let chunky;
    let v11;
    let baseline;
    const open = [];
    const q = (url, extra = {}) =>
      streamQuery(url, { query: "SELECT * FROM t", token: TOKEN, bigint: true, backoffMs: 5, ...extra });
    const need11 = (t) => {
      if (!v11) t.skip("needs a PROTOCOL 1.1 server (this one refuses `count` / `progress_ms`)");
      return !v11;
    };

    before(async () => {
      fixture = makeDatabase(ROWS, BIG_ROWS);
      server = await startServer(fixture.db);
      chunky = await startServer(fixture.db, ["--set", "stream.chunk.max_rows=40"]);
      open.push(server, chunky);
      v11 = await speaks11(server.url);
      baseline = await collect(q(server.url));
    });
    after(async () => {
      for (const s of open) await s.stop();
      fixture?.cleanup();
    });

    test("count and progressMs never break a stream: verified, identical rows; a 1.0 server's refusal is worked around", async () => {
      const seen = [];
      const stream = q(server.url, { count: "exact", progressMs: 100, onProgress: (p) => seen.push(p) });
      assert.deepEqual(await collect(stream), baseline);
      const s = stream.summary;
      assert.equal(s.verified, true);
      if (v11) {
        assert.deepEqual(s.ignoredOptions, []);
        assert.equal(s.totalRows, ROWS);
      } else {
        assert.deepEqual(s.ignoredOptions, ["count", "progressMs"]);
        assert.equal(s.totalRows, null);
        assert.ok(seen.length > 0 && seen.every((p) => p.source === "client"));
      }
    });

    for (const coding of CODINGS) {
      test(`idleTimeoutMs: a connection that stalls mid-body is dropped and resumed: identical rows [${coding}]`, async () => {
        const proxy = await startProxy(chunky.base, { stalls: [9000], acceptEncoding: coding });
        try {
          const stream = q(proxy.url, { idleTimeoutMs: 400 });
          const rows = await collect(stream);
          assert.equal(stream.summary.resumes, 1);
          assert.equal(stream.summary.verified, true);
          assert.deepEqual(rows, baseline);
        } finally {
          await proxy.close();
        }
      });

      test(`[1.1] count "exact" equals the rows streamed and is repeated through a resume [${coding}]`, async (t) => {
        if (need11(t)) return;
        // Cut halfway through this coding's body.
        const probe = await startProxy(chunky.base, { acceptEncoding: coding });
        await collect(q(probe.url));
        const total = probe.wire[0];
        await probe.close();
        const proxy = await startProxy(chunky.base, { cuts: [Math.floor(total / 2)], acceptEncoding: coding });
        try {
          const stream = q(proxy.url, { count: "exact" });
          const rows = await collect(stream);
          const s = stream.summary;
          assert.equal(s.resumes, 1);
          assert.equal(s.totalRows, rows.length);
          assert.equal(s.totalRowsExact, true);
          assert.deepEqual(rows, baseline);
        } finally {
          await proxy.close();
        }
      });
    }

    // Node 20's fetch never settles a gzip body that fails to inflate; the
    // idle timeout gets the client out, and the flip is still never
    // accepted as rows.
    test("a byte flipped in a gzip body neither hangs the client (idleTimeoutMs) nor is accepted as rows", async () => {
      const rnd = prng(SEED + 7);
      const probe = await startProxy(chunky.base, { acceptEncoding: "gzip" });
      await collect(q(probe.url));
      const total = probe.wire[0];
      await probe.close();
      for (let round = 0; round < 4; round++) {
        const at = 500 + Math.floor(rnd() * (total - 1000));
        const proxy = await startProxy(chunky.base, { flipAt: at, acceptEncoding: "gzip" });
        try {
          const stream = q(proxy.url, { idleTimeoutMs: 1000 });
          try {
            const rows = await collect(stream);
            assert.equal(stream.summary.verified, true);
            assert.deepEqual(rows, baseline, `flip at ${at} of ${total} (seed ${SEED})`);
          } catch (e) {
            assert.ok(e instanceof RowstreamError, `flip at ${at}: ${e}`);
          }
        } finally {
          await proxy.close();
        }
      }
    });

    test("[1.1] progress lines: onProgress from the server, rows and digest unchanged", async (t) => {
      if (need11(t)) return;
      const plain = q(server.url, { query: "SELECT * FROM big" });
      let n = 0;
      for await (const _ of plain) n++;
      const seen = [];
      const stream = q(server.url, { query: "SELECT * FROM big", progressMs: 100, count: "exact", onProgress: (p) => seen.push(p) });
      const t0 = Date.now();
      let m = 0;
      for await (const _ of stream) {
        // A consumer slow enough for the stream to last a few cadences.
        if (++m % 20_000 === 0) await new Promise((r) => setTimeout(r, 150));
      }
      const elapsed = Date.now() - t0;
      const s = stream.summary;
      assert.equal(m, n);
      assert.equal(s.rowCount, BIG_ROWS);
      assert.equal(s.prefixHash, plain.summary.prefixHash, "progress lines are not hashed");
      const fromServer = seen.filter((p) => p.source === "server");
      assert.ok(fromServer.length >= 2, `${fromServer.length} progress reports in ${elapsed} ms`);
      assert.ok(fromServer.length <= elapsed / 100 + 2, `${fromServer.length} progress reports in ${elapsed} ms: more often than asked`);
      assert.ok(fromServer.every((p, i) => p.rows <= BIG_ROWS && p.totalRows === BIG_ROWS && (i === 0 || p.rows >= fromServer[i - 1].rows)));
    });

    test("[1.1] heartbeats keep an idle timeout below the query's silence from cutting it", async (t) => {
      if (need11(t)) return;
      const hb = await startServer(fixture.db, ["--set", "stream.heartbeat_ms=100"]);
      open.push(hb);
      // An aggregate (no cursor: an idle cut could not be resumed) that
      // computes for a while before its only row.
      const slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) AS n FROM c";
      const t0 = Date.now();
      const rows = await collect(q(hb.url, { query: slow, idleTimeoutMs: 400 }));
      const took = Date.now() - t0;
      assert.deepEqual(rows, [{ n: 3000000 }]);
      assert.ok(took > 800, `the query took only ${took} ms: make it slower for this test to mean anything`);
    });
  });
}
