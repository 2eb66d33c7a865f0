// Browser end-to-end test of the demo page (www/) against a real server.
//
// playwright-core drives Debian's /usr/bin/chromium (headless, no browser
// download). Nothing is built here; the test needs:
//   ROWSTREAM_BIN          the server binary (e.g. target/debug/rowstream); the
//                          test is skipped when it is unset
//   ROWSTREAM_DEMO_DB_BIN  the demo database generator (`cargo build --features
//                          server --example demo_db`); default: examples/demo_db
//                          next to ROWSTREAM_BIN
//   pkg/                   the built npm package (scripts/build-pkg.sh)
//   ROWSTREAM_E2E_ROWS     rows of the demo database (default 150000)
//   ROWSTREAM_CHROMIUM     the browser (default /usr/bin/chromium)
// The page and the package are copied to a temporary directory that the
// server serves, so the working tree is left alone. A screenshot goes to
// test-output/e2e-demo.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const BIN = process.env.ROWSTREAM_BIN;
const ROWS = Number(process.env.ROWSTREAM_E2E_ROWS ?? 150_000);
const CHROMIUM = process.env.ROWSTREAM_CHROMIUM ?? "/usr/bin/chromium";
const OUT = path.join(root, "test-output");
const QUERY_100K = "SELECT * FROM events WHERE id <= 100000";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function demoDbBin() {
  if (process.env.ROWSTREAM_DEMO_DB_BIN) return process.env.ROWSTREAM_DEMO_DB_BIN;
  return path.join(path.dirname(path.resolve(BIN)), "examples", "demo_db");
}

/** Starts `rowstream serve` on a free port; resolves once it prints its address. */
async function startServer(args) {
  const child = spawn(BIN, ["serve", ...args, "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start in 20s:\n${stderr}`)), 20_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening:\n${stderr}`));
    });
  });
  return { child, url, stderr: () => stderr };
}

async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await once(child, "exit");
  clearTimeout(timer);
}

function readAudit(file) {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));
}

async function waitFor(cond, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

test(
  "demo page: verified stream, drop + resume, tamper, non-resumable reason, exact BigInt, cancel, refusal",
  { skip: BIN ? false : "ROWSTREAM_BIN is not set", timeout: 120_000 },
  async (t) => {
    const started = Date.now();
    const pkgDir = path.join(root, "pkg");
    assert.ok(
      fs.existsSync(path.join(pkgDir, "index.js")) && fs.existsSync(path.join(pkgDir, "rowstream_bg.wasm")),
      "the built package is missing: run scripts/build-pkg.sh first",
    );
    const gen = demoDbBin();
    assert.ok(
      fs.existsSync(gen),
      `demo database generator not found at ${gen}: build it with ` +
        "`cargo build --features server --example demo_db` or set ROWSTREAM_DEMO_DB_BIN",
    );
    const { chromium } = await import("playwright-core");

    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rowstream-e2e-"));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

    // The page and the freshly built package, served from a temporary copy.
    const www = path.join(tmp, "www");
    fs.cpSync(path.join(root, "www"), www, {
      recursive: true,
      filter: (src) => !src.startsWith(path.join(root, "www", "pkg")),
    });
    fs.cpSync(pkgDir, path.join(www, "pkg"), { recursive: true });

    // A small demo database.
    const db = path.join(tmp, "demo.db");
    const t0 = Date.now();
    await promisify(execFile)(gen, ["--db", db, "--rows", String(ROWS)], { timeout: 60_000 });
    t.diagnostic(`demo db: ${ROWS} rows in ${Date.now() - t0} ms`);

    const audit = path.join(tmp, "audit.jsonl");
    const server = await startServer(["--db", db, "--static-dir", www, "--audit-log", audit]);
    t.after(() => stopServer(server.child));

    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    t.after(() => browser.close());
    // A PROTOCOL 1.0 server refuses the page's `count` / `progress_ms`
    // once (400, then the page asks without them): expected until the
    // server speaks 1.1.
    const probe = await fetch(`${server.url}/v1/query/stream`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: "SELECT 1", count: "exact", progress_ms: 1000 }),
    });
    await probe.body?.cancel();
    const v10 = probe.status === 400;
    t.diagnostic(`the server speaks PROTOCOL ${v10 ? "1.0" : "1.1"}`);
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const consoleErrors = [];
    let refusalExpected = false;
    page.on("console", (m) => {
      if (m.type() !== "error") return;
      // A refused request shows up as a failed resource load; that one is expected.
      if ((refusalExpected || v10) && /status of 400/.test(m.text())) return;
      consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));

    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.body.dataset.state === "idle", null, { timeout: 15_000 });

    const finished = () =>
      page.waitForFunction(
        () => ["verified", "failed", "stopped"].includes(document.body.dataset.state),
        null,
        { timeout: 60_000 },
      );
    const state = () =>
      page.evaluate(() => ({
        state: document.body.dataset.state,
        rows: Number(document.getElementById("stat-rows").dataset.value),
        badge: document.getElementById("badge").dataset.state,
        badgeTitle: document.getElementById("badge-title").textContent,
        hash: document.getElementById("badge-hash").textContent,
        resumes: Number(document.getElementById("resume").dataset.count),
        resumeFrom: document.getElementById("resume-from").textContent,
        resumable: document.getElementById("resumable").dataset.resumable,
        reason: document.getElementById("resumable").dataset.reason,
        resumableText: document.getElementById("resumable").textContent,
        error: document.getElementById("error").hidden ? null : document.getElementById("error-code").textContent,
        log: document.getElementById("log").innerText,
      }));
    const run = async (sql) => {
      await page.fill("#sql", sql);
      await page.click("#run");
      await finished();
      return state();
    };

    // 1. An uninterrupted 100,000-row stream ends verified, without freezing
    //    the page and with only the rows in view in the DOM.
    await page.evaluate(() => {
      window.__longTasks = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
      }).observe({ type: "longtask" });
    });
    const plain = await run(QUERY_100K);
    const longTasks = await page.evaluate(() => window.__longTasks);
    t.diagnostic(`long tasks during 100k rows: ${longTasks.length}, longest ${Math.max(0, ...longTasks)} ms`);
    assert.ok(Math.max(0, ...longTasks) < 1000, `the page froze: ${longTasks}`);
    const domRows = await page.locator("#grid-rows .grid-row").count();
    assert.ok(domRows > 5 && domRows < 80, `windowed table, ${domRows} row elements`);
    assert.equal(plain.state, "verified", JSON.stringify(plain));
    assert.equal(plain.badge, "verified");
    assert.match(plain.badgeTitle, /verified · 100,000 rows/);
    assert.equal(plain.rows, 100_000);
    assert.match(plain.hash, /^[0-9a-f]{64}$/);
    assert.equal(plain.resumes, 0);
    assert.equal(plain.resumable, "true");

    // 2. The same query, its connection dropped at row 30,000: it resumes by
    //    itself and ends verified with the same count and digest — over a
    //    compressed response (Chromium asks for zstd, br, gzip).
    const encodings = [];
    const onResponse = async (res) => {
      if (new URL(res.url()).pathname !== "/v1/query/stream" || res.status() !== 200) return;
      encodings.push((await res.allHeaders())["content-encoding"] ?? "identity");
    };
    page.on("response", onResponse);
    await page.fill("#autodrop", "30000");
    const dropped = await run(QUERY_100K);
    await page.fill("#autodrop", "");
    page.off("response", onResponse);
    t.diagnostic(`content-encoding of the stream responses: ${encodings.join(", ")}`);
    assert.ok(encodings.length >= 2, `a fresh response and a resume: ${encodings}`);
    assert.ok(encodings.every((e) => ["zstd", "br", "gzip"].includes(e)), `compressed responses: ${encodings}`);
    const timing = await page.evaluate(() =>
      performance
        .getEntriesByType("resource")
        .filter((e) => new URL(e.name).pathname === "/v1/query/stream")
        .map((e) => ({ encoded: e.encodedBodySize, decoded: e.decodedBodySize })),
    );
    assert.ok(timing.some((e) => e.decoded > 1_000_000 && e.encoded < e.decoded / 2), `resource timing: ${JSON.stringify(timing)}`);
    const figures = await page.evaluate(() => ({
      bytes: Number(document.getElementById("stat-bytes").dataset.value),
      wire: Number(document.getElementById("stat-wire").dataset.value),
      ratio: document.getElementById("stat-ratio").textContent,
      progress: document.getElementById("progress").dataset.state,
      total: document.getElementById("progress").dataset.total,
    }));
    t.diagnostic(`page figures after the resumed run: ${JSON.stringify(figures)}`);
    assert.ok(figures.wire > 0 && figures.wire < figures.bytes / 2, `bytes on the wire shown: ${JSON.stringify(figures)}`);
    assert.match(figures.ratio, /^\d+\.\d× (zstd|br|gzip)$/);
    assert.equal(figures.progress, "verified");
    assert.equal(dropped.state, "verified", JSON.stringify(dropped));
    assert.equal(dropped.rows, 100_000);
    assert.ok(dropped.resumes >= 1, `expected a resume: ${JSON.stringify(dropped)}`);
    const after = Number(/after_rows ([\d,]+)/.exec(dropped.resumeFrom)?.[1].replace(/,/g, ""));
    assert.ok(after >= 30_000 && after < 100_000, `resumed from ${dropped.resumeFrom}`);
    assert.equal(dropped.hash, plain.hash, "the resumed stream has the uninterrupted digest");
    assert.doesNotMatch(dropped.log, /own digest differs/);
    assert.match(dropped.log, /connection dropped by auto-drop/);
    assert.match(dropped.log, /resume after_rows=/);
    const sameMark = await page.locator("#runs tr").first().locator(".same").textContent();
    assert.equal(sameMark.trim(), "=#1", "the runs table shows the resumed run equal to run #1");
    fs.mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: path.join(OUT, "e2e-demo-resumed.png") });

    // 2b. One digit changed in transit: the stream must not end verified.
    await page.fill("#sql", QUERY_100K);
    await page.evaluate(() => {
      document.getElementById("run").click();
      document.getElementById("tamper").click();
    });
    await finished();
    const tampered = await state();
    assert.equal(tampered.state, "failed", JSON.stringify(tampered));
    assert.equal(tampered.badge, "failed");
    assert.equal(tampered.badgeTitle, "digest mismatch");
    assert.equal(tampered.error, "digest_mismatch");
    assert.notEqual(tampered.hash, plain.hash);

    // 3. A non-resumable aggregate: verified, with the server's reason code.
    await page.click('button.chip[data-example="2"]');
    await page.click("#run");
    await finished();
    const agg = await state();
    assert.equal(agg.state, "verified", JSON.stringify(agg));
    assert.equal(agg.resumable, "false");
    assert.match(agg.reason, /^[a-z_]+$/);
    assert.equal(agg.resumableText, `not resumable: ${agg.reason}`);
    assert.ok(agg.rows > 0);

    // 3b. Integers beyond 2^53 display exactly with BigInt on, and are
    //     flagged as rounded with it off. Row 2 of the events holds 2^53 + 1.
    const bigCell = () =>
      page.evaluate(() => {
        const row = [...document.querySelectorAll("#grid-rows .grid-row")].find(
          (r) => r.children[1]?.textContent === "2",
        );
        const c = row?.children[2];
        return c ? { text: c.textContent, cls: c.className } : null;
      });
    await page.click('button.chip[data-example="4"]');
    await page.click("#run");
    await finished();
    await page.evaluate(() => {
      document.getElementById("grid").scrollTop = 0;
    });
    await page.waitForFunction(() => document.querySelector("#grid-rows .grid-row span:nth-child(2)")?.textContent === "1");
    assert.deepEqual(await bigCell(), { text: "9007199254740993", cls: "cell-num cell-big" });
    await page.setChecked("#bigint", false);
    await page.click("#run");
    await finished();
    await page.evaluate(() => {
      document.getElementById("grid").scrollTop = 0;
    });
    await page.waitForFunction(() => document.querySelector("#grid-rows .grid-row span:nth-child(2)")?.textContent === "1");
    assert.deepEqual(await bigCell(), { text: "9007199254740992", cls: "cell-num cell-rounded" });
    await page.setChecked("#bigint", true);

    // 4. Cancel a long query: paused (backpressure holds the server), then
    //    cancelled; the server reports the stream closed with reason cancelled.
    //    Each row carries 8 KiB of padding so the result (1.2 GB) is far more
    //    than socket and browser buffers can absorb while the page is paused.
    await page.fill("#sql", "SELECT id, ts, hex(zeroblob(4096)) AS pad FROM events");
    const openedBefore = readAudit(audit).filter((e) => e.event === "stream.opened").length;
    await page.evaluate(() => {
      document.getElementById("run").click();
      document.getElementById("pause").click();
    });
    await waitFor(
      () => page.evaluate(() => Number(document.getElementById("stat-rows").dataset.value) > 0),
      15_000,
      "the first rows of the long query",
    );
    const opened = await waitFor(
      () => readAudit(audit).filter((e) => e.event === "stream.opened")[openedBefore],
      10_000,
      "stream.opened in the audit log",
    );
    await sleep(300);
    const mid = await state();
    assert.equal(mid.state, "running", "the long query is still running while paused");
    assert.ok(mid.rows < ROWS, `paused at ${mid.rows} rows`);
    await page.click("#cancel");
    await finished();
    const cancelled = await state();
    assert.equal(cancelled.state, "stopped", JSON.stringify(cancelled));
    assert.equal(cancelled.badge, "stopped");
    assert.ok(cancelled.rows < ROWS);
    const closed = await waitFor(
      () => readAudit(audit).find((e) => e.event === "stream.closed" && e.lease === opened.lease),
      10_000,
      `stream.closed for lease ${opened.lease}`,
    );
    assert.equal(closed.reason, "cancelled", JSON.stringify(closed));
    await waitFor(
      async () => /cancel → 200/.test((await state()).log),
      10_000,
      "the cancel request's answer in the page log",
    );

    // 5. A write is refused with a readable code, and nothing ran.
    refusalExpected = true;
    const refused = await run("DELETE FROM events WHERE id = 1");
    refusalExpected = false;
    assert.equal(refused.state, "failed");
    assert.equal(refused.error, "stream_unsupported_statement");
    assert.equal(refused.badge, "failed");
    assert.match(await page.locator("#error-hint").textContent(), /nothing ran/);

    // Back to the resumed run's view for the final screenshot.
    await page.click('button.chip[data-example="0"]');
    await page.fill("#sql", QUERY_100K);
    await page.click("#run");
    await finished();
    await page.screenshot({ path: path.join(OUT, "e2e-demo.png") });
    assert.deepEqual(consoleErrors, [], "the page logged no console errors");
    t.diagnostic(`e2e finished in ${Date.now() - started} ms`);
  },
);
