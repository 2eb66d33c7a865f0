// ingestRows against a REAL rowstream server (ROWSTREAM_BIN): uploads read
// back with streamQuery, tampering, refusals, aborts and the Blob fallback.
// Skipped only when ROWSTREAM_BIN is unset.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, extname } from "node:path";
import { fileURLToPath } from "node:url";
import http from "node:http";
import https from "node:https";
import { rowstream, collect, launchChromium, stopChromium } from "./helpers.mjs";
import { BIN, TOKEN, makeDatabase, startServer, stats, waitFor } from "./server-harness.mjs";

const { ingestRows, streamQuery, RowstreamError, PrefixHasher } = rowstream;
const COLUMNS = ["id", "name", "big", "note"];
const TABLES = ["rt", "arr", "iter", "agen", "exact", "tamper", "unknown", "abort", "blob", "none", "bad", "thrown", "quota", "blobabort", "browser", "browser_forced", "wasmhash", "gz", "gzblob", "zst", "gzslow"];
const CHROME = process.env.CHROME_BIN ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find(existsSync);
const root = fileURLToPath(new URL("../../", import.meta.url));
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".html": "text/html" };

/** Row i as the tests write it (every listed column present, 64-bit `big`). */
const makeRow = (i) => ({
  id: i + 1,
  name: `name-${i}`,
  big: 9007199254740993n + BigInt(i) * 1000003n,
  note: `h\u00e9llo \u{1F600} \u4e16\u754c ${i}`,
});
/** Its line on the wire, written independently of the client. */
const lineOf = (r) =>
  `{"row":{"id":${r.id},"name":${JSON.stringify(r.name)},"big":${r.big},"note":${JSON.stringify(r.note)}}}`;
function digestOf(rows) {
  const h = new PrefixHasher();
  h.updateLines(rows.map(lineOf));
  const hex = h.hexDigest();
  h.free();
  return hex;
}
const HEX64 = /^[0-9a-f]{64}$/;

/** A fetch that records how each body was sent. */
function recordingFetch(log) {
  return (url, init) => {
    log.push({ url, streamed: init.body instanceof ReadableStream, blob: init.body instanceof Blob, duplex: init.duplex });
    return fetch(url, init);
  };
}

if (!BIN) {
  test("real-server ingest suite", { skip: "ROWSTREAM_BIN is not set: build with `cargo build --features server` and set ROWSTREAM_BIN to run it" }, () => {});
} else {
  describe(`ingestRows against the real server (${BIN})`, () => {
    let fixture;
    let server;
    let ingestUrl;
    const open = [];
    const ingest = (rows, extra = {}) => ingestRows(ingestUrl, rows, { table: "rt", columns: COLUMNS, token: TOKEN, ...extra });
    const readBack = async (table, columns = COLUMNS) => {
      const stream = streamQuery(server.url, { query: `SELECT ${columns.join(", ")} FROM ${table}`, token: TOKEN, bigint: true });
      const rows = await collect(stream);
      return { rows, hash: stream.summary.prefixHash, summary: stream.summary };
    };
    const count = async (table) => (await readBack(table, ["id"])).rows.length;

    before(async () => {
      fixture = makeDatabase(1, 1);
      const ddl = TABLES.map((t) => `CREATE TABLE ${t}(id INTEGER PRIMARY KEY, name TEXT, big INTEGER, note TEXT);`).join("\n");
      execFileSync("sqlite3", [fixture.db], { input: `${ddl}\nCREATE TABLE j(id INTEGER PRIMARY KEY, v INTEGER, doc TEXT, r REAL, b INTEGER);` });
      server = await startServer(fixture.db);
      open.push(server);
      ingestUrl = `${server.base}/v1/ingest/stream`;
    });
    after(async () => {
      for (const s of open) await s.stop();
      fixture?.cleanup();
    });

    test("100,000 rows round-trip, streamed and verified: same rows, same digest", async () => {
      const rows = Array.from({ length: 100_000 }, (_, i) => makeRow(i));
      const sent = [];
      const end = await ingest(rows, { fetch: recordingFetch(sent) });
      assert.equal(end.row_count, rows.length);
      assert.equal(end.integrity, "ok");
      assert.match(end.lease, /^[0-9a-f]{32}$/);
      assert.equal(end.sha256, digestOf(rows), "the client hashes exactly the lines of the protocol");
      assert.deepEqual(sent, [{ url: ingestUrl, streamed: true, blob: false, duplex: "half" }], "Node streams the body");
      const back = await readBack("rt");
      assert.equal(back.summary.verified, true);
      assert.equal(back.rows.length, rows.length);
      assert.deepEqual(back.rows, rows);
      assert.equal(back.hash, end.sha256, "the read-back digest is the digest sent");
    });

    test("in Node the row lines are hashed with node:crypto by default, and hash: \"wasm\" gives the same digest", async (t) => {
      const crypto = process.getBuiltinModule?.("node:crypto");
      if (crypto === undefined) {
        t.skip("no process.getBuiltinModule in this Node");
        return;
      }
      const rows = Array.from({ length: 3000 }, (_, i) => makeRow(i));
      const rowBytes = rows.reduce((n, r) => n + Buffer.byteLength(lineOf(r)), 0);
      const proto = Object.getPrototypeOf(crypto.createHash("sha256"));
      const update = proto.update;
      let hashed = 0;
      proto.update = function (data, ...rest) {
        hashed += typeof data === "string" ? Buffer.byteLength(data, rest[0]) : data.length;
        return update.call(this, data, ...rest);
      };
      try {
        const native = await ingest(rows, { table: "wasmhash" });
        assert.equal(hashed, rowBytes, "node:crypto hashed every row byte once");
        assert.equal(native.sha256, digestOf(rows));
        assert.equal(native.integrity, "ok");
        hashed = 0;
        const wasm = await ingest(rows.map((r) => ({ ...r, id: r.id + rows.length })), { table: "wasmhash", hash: "wasm" });
        assert.equal(hashed, 0, 'hash: "wasm" does not touch node:crypto');
        assert.equal(wasm.integrity, "ok");
        assert.equal(wasm.row_count, rows.length);
      } finally {
        proto.update = update;
      }
      assert.equal(await count("wasmhash"), 2 * rows.length);
      await assert.rejects(ingest(rows, { table: "wasmhash", hash: "fast" }), TypeError);
    });

    test("arrays, sync iterables and async generators are all accepted", async () => {
      const rows = Array.from({ length: 2500 }, (_, i) => makeRow(i));
      assert.equal((await ingest(rows.slice(0, 10), { table: "arr" })).row_count, 10);
      assert.deepEqual((await readBack("arr")).rows, rows.slice(0, 10));

      const iterable = { *[Symbol.iterator]() { for (const r of rows) yield r; } };
      const viaIter = await ingest(iterable, { table: "iter" });
      assert.equal(viaIter.row_count, rows.length);
      const iterBack = await readBack("iter");
      assert.deepEqual(iterBack.rows, rows);
      assert.equal(iterBack.hash, viaIter.sha256);

      let finished = false;
      async function* gen() {
        try {
          for (const r of rows) {
            if (r.id % 500 === 0) await new Promise((res) => setTimeout(res, 1));
            yield r;
          }
        } finally {
          finished = true;
        }
      }
      const viaGen = await ingest(gen(), { table: "agen" });
      assert.equal(viaGen.row_count, rows.length);
      assert.equal(finished, true);
      const genBack = await readBack("agen");
      assert.deepEqual(genBack.rows, rows);
      assert.equal(genBack.hash, viaGen.sha256);
    });

    test("BigInt and JSON values are exact; only listed columns are written, absent ones are NULL", async () => {
      const values = [2n ** 63n - 1n, -(2n ** 63n), 9007199254740993n, 42n, 0n];
      const rows = values.map((v, i) => ({ id: i + 1, v, doc: { a: [1, "x", null, true], n: 9007199254740993n }, r: 0.5 + i, b: i % 2 === 0, extra: "ignored" }));
      rows.push({ id: 100, v: null }); // doc, r, b absent → NULL
      const end = await ingestRows(ingestUrl, rows, { table: "j", columns: ["id", "v", "doc", "r", "b"], token: TOKEN });
      assert.equal(end.row_count, rows.length);
      const back = (await readBack("j", ["id", "v", "doc", "r", "b"])).rows;
      assert.deepEqual(back.map((r) => r.v), [...values.map((v) => (Number.isSafeInteger(Number(v)) && BigInt(Number(v)) === v ? Number(v) : v)), null]);
      assert.equal(typeof back[0].v, "bigint");
      assert.equal(back[0].v, 2n ** 63n - 1n, "i64::MAX survives");
      assert.equal(back[1].v, -(2n ** 63n), "i64::MIN survives");
      // (The server stores its own serialisation of the JSON: 64-bit integers
      // exact, keys sorted; hence keys in order here.)
      assert.equal(back[0].doc, '{"a":[1,"x",null,true],"n":9007199254740993}', "nested values are stored as their JSON text, 64-bit exact");
      assert.deepEqual(back.map((r) => r.r), [0.5, 1.5, 2.5, 3.5, 4.5, null]);
      assert.deepEqual(back.map((r) => r.b), [1, 0, 1, 0, 1, null]);
      assert.deepEqual(back[5], { id: 100, v: null, doc: null, r: null, b: null });
    });

    test("non-JSON values are refused clearly before they are sent, and nothing lands", async () => {
      const cases = [
        [{ name: NaN }, /NaN is not a JSON number/],
        [{ name: Infinity }, /Infinity is not a JSON number/],
        [{ name: new Date(0) }, /a Date is not a JSON value/],
        [{ name: () => 1 }, /a function is not a JSON value/],
        [{ name: Symbol("s") }, /a symbol is not a JSON value/],
        [{ name: new Map() }, /a Map is not a JSON value/],
        [{ name: [1, undefined] }, /name\[1\]/],
        [{ big: 2n ** 63n }, /does not fit a 64-bit integer/],
        [{ big: -(2n ** 63n) - 1n }, /does not fit a 64-bit integer/],
      ];
      const circular = { a: 1 };
      circular.self = circular;
      cases.push([{ name: circular }, /circular/]);
      for (const [bad, message] of cases) {
        const rows = Array.from({ length: 6000 }, (_, i) => makeRow(i));
        rows[5000] = { ...rows[5000], ...bad };
        await assert.rejects(ingest(rows, { table: "bad" }), (e) => {
          assert.ok(e instanceof RowstreamError, String(e));
          assert.equal(e.code, "invalid_row");
          assert.equal(e.status, undefined, "a client-side refusal");
          assert.equal(e.details.line, 5002);
          assert.equal(e.details.row, 5000);
          assert.equal(e.details.column, Object.keys(bad)[0]);
          assert.match(e.message, message);
          return true;
        });
      }
      await assert.rejects(ingest([makeRow(0), null], { table: "bad" }), (e) => e.code === "invalid_row" && e.details.line === 3);
      await assert.rejects(ingest([[1, "a"]], { table: "bad" }), (e) => e.code === "invalid_row" && /an array is not a row object/.test(e.message));
      assert.equal(await count("bad"), 0, "rows before the bad one were rolled back");
    });

    test("a row altered in transit is integrity_failed and no row lands", async () => {
      const rows = Array.from({ length: 5000 }, (_, i) => makeRow(i));
      let altered = 0;
      const tamper = (url, init) => {
        const swap = (text) => {
          const out = text.replace('"name":"name-1234"', '"name":"name-1235"');
          if (out !== text) altered += 1;
          return out;
        };
        const dec = new TextDecoder();
        const enc = new TextEncoder();
        const body = init.body.pipeThrough(
          new TransformStream({ transform: (chunk, c) => c.enqueue(enc.encode(swap(dec.decode(chunk, { stream: true })))) }),
        );
        return fetch(url, { ...init, body });
      };
      await assert.rejects(ingest(rows, { table: "tamper", fetch: tamper }), (e) => {
        assert.ok(e instanceof RowstreamError);
        assert.equal(e.code, "integrity_failed");
        assert.equal(e.status, 400);
        assert.equal(e.details.line, rows.length + 2, "the end line");
        assert.equal(e.details.expected, digestOf(rows), "the digest the client sent");
        assert.match(e.details.actual, HEX64);
        assert.notEqual(e.details.actual, e.details.expected);
        return true;
      });
      assert.equal(altered, 1);
      assert.equal(await count("tamper"), 0);
    });

    test("an unknown column is refused at line 1, early: the source stops being read", async () => {
      let pulled = 0;
      let closed = false;
      function* many() {
        try {
          for (let i = 0; i < 5_000_000; i++) {
            pulled += 1;
            yield makeRow(i);
          }
        } finally {
          closed = true;
        }
      }
      await assert.rejects(ingest(many(), { table: "unknown", columns: ["id", "nope"] }), (e) => {
        assert.ok(e instanceof RowstreamError);
        assert.equal(e.code, "unknown_column");
        assert.equal(e.status, 400);
        assert.equal(e.details.line, 1);
        assert.equal(e.details.column, "nope");
        return true;
      });
      assert.ok(pulled < 5_000_000, `stopped producing after the answer (${pulled} rows pulled)`);
      assert.equal(closed, true, "the source's return() was called");
      await assert.rejects(ingest([makeRow(0)], { table: "no_such_table" }), (e) => e.code === "unknown_table" && e.status === 400 && e.details.table === "no_such_table" && e.details.line === 1);
      // Sent whole: the server refuses a bad token before reading the body and
      // closes without draining it, so a streamed body can race into a reset.
      await assert.rejects(ingest([makeRow(0)], { table: "unknown", token: "wrong", stream: false }), (e) => e.code === "unauthorized" && e.status === 401);
      assert.equal(await count("unknown"), 0);
    });

    test("abort mid-upload rejects with the signal's reason and no row lands", async () => {
      const ac = new AbortController();
      let closed = false;
      let yielded = 0;
      async function* rows() {
        try {
          for (let i = 0; i < 1_000_000; i++) {
            if (i === 20_000) {
              // The server holds the upload open (rows already sent), then we abort.
              await waitFor("the upload to be running", async () => (await stats(server.base)).slots_in_use >= 1);
              ac.abort();
            }
            yielded += 1;
            yield makeRow(i);
          }
        } finally {
          closed = true;
        }
      }
      await assert.rejects(ingest(rows(), { table: "abort", signal: ac.signal }), (e) => e.name === "AbortError");
      assert.ok(yielded < 1_000_000);
      await waitFor("the source to be closed", () => closed);
      await waitFor("the slot to be released", async () => (await stats(server.base)).slots_in_use === 0);
      assert.equal(await count("abort"), 0);
      // An already aborted signal sends nothing.
      await assert.rejects(ingest([makeRow(0)], { table: "abort", signal: AbortSignal.abort() }), (e) => e.name === "AbortError");
    });

    test("an error thrown by the source rejects with it and no row lands", async () => {
      const boom = new Error("source failed");
      function* rows() {
        for (let i = 0; i < 10_000; i++) {
          if (i === 7000) throw boom;
          yield makeRow(i);
        }
      }
      await assert.rejects(ingest(rows(), { table: "thrown" }), (e) => e === boom);
      await waitFor("the slot to be released", async () => (await stats(server.base)).slots_in_use === 0);
      assert.equal(await count("thrown"), 0);
    });

    test("the Blob fallback (stream: false) sends the same body whole and round-trips", async () => {
      const rows = Array.from({ length: 20_000 }, (_, i) => makeRow(i));
      const sent = [];
      const end = await ingest(rows, { table: "blob", stream: false, fetch: recordingFetch(sent) });
      assert.deepEqual(sent, [{ url: ingestUrl, streamed: false, blob: true, duplex: undefined }]);
      assert.equal(end.row_count, rows.length);
      assert.equal(end.integrity, "ok");
      assert.equal(end.sha256, digestOf(rows));
      const back = await readBack("blob");
      assert.deepEqual(back.rows, rows);
      assert.equal(back.hash, end.sha256);

      // Tampering is caught the same way with a Blob body.
      const tamper = async (url, init) => {
        const text = (await init.body.text()).replace('"name":"name-77"', '"name":"name-78"');
        return fetch(url, { ...init, body: new Blob([text]) });
      };
      await assert.rejects(ingest(rows, { table: "blob", stream: false, fetch: tamper }), (e) => e.code === "integrity_failed" && e.details.expected === end.sha256);
      // Abort while the Blob is being built: nothing is sent.
      const ac = new AbortController();
      const calls = [];
      async function* slow() {
        for (let i = 0; i < 100_000; i++) {
          if (i === 3000) ac.abort();
          yield makeRow(i);
        }
      }
      await assert.rejects(ingest(slow(), { table: "blobabort", stream: false, signal: ac.signal, fetch: recordingFetch(calls) }), (e) => e.name === "AbortError");
      assert.equal(calls.length, 0);
      assert.equal(await count("blob"), rows.length);
      assert.equal(await count("blobabort"), 0);
    });

    test('compress: "gzip" sends a gzip body (Content-Encoding), streamed or as a Blob, and round-trips', async () => {
      const rows = Array.from({ length: 20_000 }, (_, i) => makeRow(i));
      const sent = [];
      const spy = (url, init) => {
        sent.push({ encoding: init.headers["content-encoding"], body: init.body });
        return fetch(url, init);
      };
      const end = await ingest(rows, { table: "gz", compress: "gzip", fetch: spy });
      assert.equal(end.row_count, rows.length);
      assert.equal(end.integrity, "ok");
      assert.equal(sent[0].encoding, "gzip");
      assert.ok(sent[0].body instanceof ReadableStream);
      const back = await readBack("gz");
      assert.deepEqual(back.rows, rows);
      assert.equal(back.hash, end.sha256);

      const blobEnd = await ingest(rows, { table: "gzblob", compress: "gzip", stream: false, fetch: spy });
      assert.equal(blobEnd.row_count, rows.length);
      const blob = sent[1].body;
      assert.ok(blob instanceof Blob);
      const head = new Uint8Array(await blob.slice(0, 2).arrayBuffer());
      assert.deepEqual([...head], [0x1f, 0x8b], "a gzip member");
      const raw = rows.map(lineOf).join("\n").length;
      assert.ok(blob.size < raw / 3, `${blob.size} bytes sent for ${raw} bytes of row lines`);
      assert.equal((await readBack("gzblob")).hash, end.sha256);
    });

    test("a slow source's rows are not held back by the compressor (flushed per piece)", async () => {
      // The server times out an upload that sends nothing; an unflushed
      // gzip stream would sit on these few rows until the end.
      const seen = [];
      const spy = (url, init) => {
        const [a, b] = init.body.tee();
        (async () => {
          const reader = b.getReader();
          for (;;) {
            const r = await reader.read();
            if (r.done) break;
            seen.push({ at: Date.now(), bytes: r.value.length });
          }
        })();
        return fetch(url, { ...init, body: a });
      };
      async function* slow() {
        for (let i = 0; i < 4; i++) {
          yield makeRow(i);
          await new Promise((r) => setTimeout(r, 120));
        }
      }
      const t0 = Date.now();
      const end = await ingest(slow(), { table: "gzslow", compress: "gzip", fetch: spy });
      assert.equal(end.row_count, 4);
      assert.ok(seen.filter((c) => c.at - t0 < 300).length >= 2, `pieces sent: ${JSON.stringify(seen.map((c) => c.at - t0))}`);
    });

    test('compress: "zstd" where the runtime has it, else invalid_argument before anything is sent', async () => {
      const rows = Array.from({ length: 1000 }, (_, i) => makeRow(i));
      const calls = [];
      const has = typeof process.getBuiltinModule?.("node:zlib")?.createZstdCompress === "function";
      if (has) {
        const end = await ingest(rows, { table: "zst", compress: "zstd", fetch: recordingFetch(calls) });
        assert.equal(end.row_count, rows.length);
        assert.equal((await readBack("zst")).hash, end.sha256);
      } else {
        await assert.rejects(
          ingest(rows, { table: "zst", compress: "zstd", fetch: recordingFetch(calls) }),
          (e) => e instanceof RowstreamError && e.code === "invalid_argument" && /zstd/.test(e.message),
        );
        assert.equal(calls.length, 0);
        assert.equal(await count("zst"), 0);
      }
    });

    test('verify: "none" sends no digest and reports integrity "unchecked"', async () => {
      let bodyText = "";
      const capture = async (url, init) => {
        bodyText = await init.body.text();
        return fetch(url, init);
      };
      const rows = [makeRow(0), makeRow(1)];
      const end = await ingest(rows, { table: "none", verify: "none", stream: false, fetch: capture });
      assert.equal(end.integrity, "unchecked");
      assert.equal(end.row_count, 2);
      assert.equal(bodyText, [JSON.stringify({ open: { table: "none", columns: COLUMNS, verify: "none" } }), ...rows.map(lineOf), '{"end":{}}', ""].join("\n"));
      assert.deepEqual((await readBack("none")).rows, rows);
    });

    test("429 on a full quota carries limit, current and retryAfterMs", async () => {
      const one = await startServer(fixture.db, ["--set", "stream.max_per_principal=1"]);
      open.push(one);
      // The first upload holds the principal's only slot while its source waits.
      let release;
      const gate = new Promise((r) => (release = r));
      async function* held() {
        yield makeRow(0);
        await gate;
        yield makeRow(1);
      }
      const oneUrl = `${one.base}/v1/ingest/stream`;
      const holder = ingestRows(oneUrl, held(), { table: "quota", columns: COLUMNS, token: TOKEN });
      try {
        await waitFor("the first upload to hold its slot", async () => (await stats(one.base)).slots_in_use >= 1);
        await assert.rejects(ingestRows(oneUrl, [makeRow(5)], { table: "quota", columns: COLUMNS, token: TOKEN }), (e) => {
          assert.ok(e instanceof RowstreamError);
          assert.equal(e.code, "principal_stream_quota_exhausted");
          assert.equal(e.status, 429);
          assert.equal(e.details.limit, 1);
          assert.equal(e.details.current, 1);
          assert.ok(typeof e.retryAfterMs === "number" && e.retryAfterMs >= 0, `retryAfterMs ${e.retryAfterMs}`);
          return true;
        });
      } finally {
        release();
      }
      assert.equal((await holder).row_count, 2, "the first upload was not disturbed");
      assert.deepEqual((await readBack("quota")).rows, [makeRow(0), makeRow(1)]);
    });

    // Chromium streams uploads only over HTTP/2. Over an HTTP/1.1 https
    // origin, "auto" tries the stream, is refused before a row is read, and
    // redoes the upload as a Blob; a forced stream fails cleanly.
    test("in Chromium over HTTP/1.1 (TLS), auto falls back to a Blob; a forced stream fails cleanly", { skip: CHROME && existsSync("/usr/bin/openssl") ? false : "no Chromium or openssl", timeout: 90_000 }, async () => {
      const dir = mkdtempSync(join(tmpdir(), "rowstream-ingest-tls-"));
      execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"], { stdio: "ignore" });
      const page = `<!doctype html><meta charset="utf-8"><script type="module">
const report = (r) => fetch("/result", { method: "POST", body: JSON.stringify(r, (k, v) => typeof v === "bigint" ? String(v) : v) });
try {
  const m = await import("/pkg/index.js");
  let pulled = 0;
  async function* rows() { for (let i = 0; i < 3000; i++) { pulled++; yield { id: i + 1, name: "name-" + i, big: 9007199254740993n + BigInt(i) * 1000003n, note: "h\u00e9llo \u{1F600} " + i }; } }
  const url = location.origin + "/v1/ingest/stream";
  const opts = { table: "browser", columns: ["id", "name", "big", "note"], token: ${JSON.stringify(TOKEN)} };
  const end = await m.ingestRows(url, rows(), opts);
  let forced = null;
  try { await m.ingestRows(url, [{ id: 1 }], { ...opts, table: "browser_forced", stream: true }); forced = "resolved"; } catch (e) { forced = { code: e.code, message: e.message, outcome: e.details && e.details.outcome }; }
  report({ end, pulled, forced });
} catch (e) {
  report({ error: String(e && e.stack || e), code: e && e.code });
}
</script>`;
      let resolveResult;
      const result = new Promise((r) => (resolveResult = r));
      const uploads = [];
      const upstream = new URL(server.base);
      const web = https.createServer({ key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) }, async (req, res) => {
        const url = new URL(req.url, "https://x");
        if (req.method === "POST" && url.pathname === "/result") {
          let data = "";
          for await (const c of req) data += c;
          res.end("ok");
          resolveResult(JSON.parse(data));
          return;
        }
        if (req.method === "POST" && url.pathname === "/v1/ingest/stream") {
          const seen = { chunked: req.headers["transfer-encoding"] === "chunked", contentLength: req.headers["content-length"] ?? null, status: null };
          uploads.push(seen);
          const up = http.request({ host: upstream.hostname, port: upstream.port, path: url.pathname, method: "POST", headers: { ...req.headers, host: upstream.host } }, (ur) => {
            seen.status = ur.statusCode;
            res.writeHead(ur.statusCode, ur.headers);
            ur.pipe(res);
          });
          up.on("error", () => res.destroy());
          req.on("error", () => up.destroy());
          req.pipe(up);
          return;
        }
        if (url.pathname === "/") {
          res.writeHead(200, { "content-type": "text/html" });
          res.end(page);
          return;
        }
        const file = join(root, url.pathname);
        if (!file.startsWith(root) || !existsSync(file)) {
          res.writeHead(404);
          res.end();
          return;
        }
        res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
        res.end(readFileSync(file));
      });
      await new Promise((r) => web.listen(0, "127.0.0.1", r));
      const chrome = launchChromium(CHROME, ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors", `--user-data-dir=${join(dir, "profile")}`, `https://127.0.0.1:${web.address().port}/`]);
      try {
        let timer;
        const r = await Promise.race([result, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error("no result from the page in 60 s")), 60_000)))]).finally(() => clearTimeout(timer));
        assert.equal(r.error, undefined, `${r.code}: ${r.error}`);
        assert.equal(r.end.row_count, 3000);
        assert.equal(r.end.integrity, "ok");
        assert.equal(r.pulled, 3000, "every row read once: the refused stream read none");
        // The upload that landed was sent whole, with a Content-Length.
        const landed = uploads.filter((u) => u.status === 200);
        assert.equal(landed.length, 1, JSON.stringify(uploads));
        assert.equal(landed[0].chunked, false);
        assert.ok(Number(landed[0].contentLength) > 0);
        assert.equal(r.forced.code, "ingest_interrupted", JSON.stringify(r.forced));
        assert.equal(r.forced.outcome, "rolled_back");
        const back = await readBack("browser");
        assert.equal(back.rows.length, 3000);
        assert.equal(back.rows[2999].big, 9007199254740993n + 2999n * 1000003n);
        assert.equal(back.hash, r.end.sha256);
        assert.equal(await count("browser_forced"), 0);
      } finally {
        await stopChromium(chrome, join(dir, "profile"));
        web.closeAllConnections();
        await new Promise((r) => web.close(r));
        rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
      }
    });

    test("bad arguments are TypeErrors", async () => {
      await assert.rejects(ingestRows(ingestUrl, [], { columns: COLUMNS }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, [], { table: "rt", columns: [] }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, [], { table: "rt", columns: ["id", "id"] }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, [], { table: "rt", columns: COLUMNS, verify: "md5" }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, [], { table: "rt", columns: COLUMNS, stream: "yes" }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, [], { table: "rt", columns: COLUMNS, compress: "br" }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, 42, { table: "rt", columns: COLUMNS }), TypeError);
      await assert.rejects(ingestRows(ingestUrl, "rows", { table: "rt", columns: COLUMNS }), TypeError);
    });
  });
}
