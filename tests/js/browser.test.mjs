// The built package in headless Chromium, without a bundler: the page
// imports pkg/index.js, which loads rowstream_bg.wasm through
// new URL(..., import.meta.url). It checks the digest vectors, framing of
// split UTF-8 with exact integers, and a streamQuery that must resume after
// the test server drops the connection mid-body. Skipped when no Chromium is
// installed (CHROME_BIN, or /usr/bin/chromium).
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { rowstream, launchChromium, stopChromium } from "./helpers.mjs";

const CHROME = process.env.CHROME_BIN ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find(existsSync);
const root = fileURLToPath(new URL("../../", import.meta.url));
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".html": "text/html" };

const ROWS = Array.from({ length: 400 }, (_, i) => ({ id: 9007199254740993n + BigInt(i), s: `\u00e9\u{1F600}\u4e16 ${i}` }));
const rowLine = (r) => `{"row":{"id":${r.id},"s":${JSON.stringify(r.s)}}}`;

function body(from) {
  const h = new rowstream.PrefixHasher();
  ROWS.slice(0, from).forEach((r) => h.updateLine(rowLine(r)));
  const lines = [JSON.stringify({ open: { lease: "1".repeat(32), snapshot_lsn: 1, resumable: true, cursor: "c".repeat(48), expires_at_ms: 0, columns: [{ name: "id", type: "INTEGER" }, { name: "s", type: "TEXT" }], after_rows: from } })];
  for (const r of ROWS.slice(from)) {
    lines.push(rowLine(r));
    h.updateLine(rowLine(r));
  }
  lines.push(JSON.stringify({ end: { reason: "ok", row_count: ROWS.length, prefix_hash: h.hexDigest(), lease: "1".repeat(32), bytes: 0 } }));
  h.free();
  return Buffer.from(lines.join("\n") + "\n");
}

const PAGE = `<!doctype html><meta charset="utf-8"><script type="module">
const report = (result) => fetch("/result", { method: "POST", body: JSON.stringify(result) });
try {
  const m = await import("/pkg/index.js");
  await m.default();
  const checks = [];
  const vectors = await (await fetch("/tests/vectors/digests.json")).json();
  for (const c of vectors) {
    const h = new m.PrefixHasher();
    h.updateLines(c.lines);
    checks.push(h.hexDigest() === c.prefix_hash);
  }
  const text = new TextEncoder().encode('{"id":12345678901234567890,"s":"\\u00e9\\u{1F600}"}\\n{"id":2}\\n');
  const split = new ReadableStream({ start(c) { for (let i = 0; i < text.length; i += 3) c.enqueue(text.slice(i, i + 3)); c.close(); } });
  const lines = [];
  for await (const v of split.pipeThrough(new m.NdjsonDecoderStream({ bigint: true }))) lines.push(v);
  checks.push(lines.length === 2 && lines[0].id === 12345678901234567890n && lines[0].s === "\\u00e9\\u{1F600}" && lines[1].id === 2);
  const stream = m.streamQuery(location.origin + "/v1/query/stream", { query: "SELECT * FROM t", bigint: true, backoffMs: 5 });
  const rows = [];
  for await (const r of stream) rows.push(r);
  report({
    checks,
    rows: rows.length,
    firstId: String(rows[0].id),
    lastId: String(rows[rows.length - 1].id),
    lastS: rows[rows.length - 1].s,
    summary: stream.summary,
  });
} catch (e) {
  report({ error: String(e && e.stack || e), code: e && e.code });
}
</script>`;

test("the built package works in headless Chromium, resume included", { skip: CHROME ? false : "no Chromium found (set CHROME_BIN)", timeout: 60_000 }, async () => {
  let resolveResult;
  const result = new Promise((r) => (resolveResult = r));
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    if (req.method === "POST") {
      let data = "";
      for await (const c of req) data += c;
      if (url.pathname === "/result") {
        res.end("ok");
        resolveResult(JSON.parse(data));
        return;
      }
      const b = JSON.parse(data);
      requests.push(b);
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      if (b.cursor === undefined) {
        const all = body(0);
        // Half the body, then the connection drops.
        res.write(all.subarray(0, Math.floor(all.length / 2) + 3), () => setTimeout(() => req.socket.destroy(), 20));
      } else {
        res.end(body(b.after_rows));
      }
      return;
    }
    if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(PAGE);
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
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const profile = mkdtempSync(join(tmpdir(), "rowstream-chromium-"));
  const chrome = launchChromium(CHROME, ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", `--user-data-dir=${profile}`, `http://127.0.0.1:${server.address().port}/`]);
  try {
    const r = await Promise.race([result, new Promise((_, rej) => setTimeout(() => rej(new Error("no result from the page in 45 s")), 45_000))]);
    assert.equal(r.error, undefined, `${r.code}: ${r.error}`);
    assert.ok(r.checks.length > 5 && r.checks.every(Boolean), JSON.stringify(r.checks));
    assert.equal(r.rows, ROWS.length);
    assert.equal(r.firstId, "9007199254740993");
    assert.equal(r.lastId, String(ROWS[ROWS.length - 1].id));
    assert.equal(r.lastS, ROWS[ROWS.length - 1].s);
    assert.equal(r.summary.verified, true);
    assert.equal(r.summary.hash, "wasm", "browsers hash in WebAssembly");
    assert.equal(r.summary.resumes, 1);
    assert.equal(requests[1].cursor, "c".repeat(48));
    assert.ok(requests[1].after_rows > 0);
  } finally {
    await stopChromium(chrome, profile);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
