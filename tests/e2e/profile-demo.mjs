// Measures (and optionally profiles) the demo page against `streamQuery`
// alone in the same page and browser: how long until 1M `events` rows are
// shown and verified. Not a test (node --test does not pick it up).
//
//   node tests/e2e/profile-demo.mjs [--rows 1000000] [--runs 3] [--profile out.cpuprofile]
//
// Needs ROWSTREAM_BIN and ROWSTREAM_DEMO_DB_BIN (release builds for
// meaningful numbers), pkg/ (scripts/build-pkg.sh) and /usr/bin/chromium.
// The demo database is generated once into $ROWSTREAM_PROFILE_DB
// (default /tmp/rowstream-profile-<rows>.db) and reused.
// ROWSTREAM_PROFILE_WWW=dir measures another copy of the page, e.g.
//   git archive a1190a3 www | tar -x -C /tmp/before
//   ROWSTREAM_PROFILE_WWW=/tmp/before/www node tests/e2e/profile-demo.mjs
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const ROWS = Number(arg("rows", 1_000_000));
const RUNS = Number(arg("runs", 3));
const PROFILE = arg("profile", null);
const BIN = process.env.ROWSTREAM_BIN;
const GEN = process.env.ROWSTREAM_DEMO_DB_BIN;
if (!BIN || !GEN) throw new Error("set ROWSTREAM_BIN and ROWSTREAM_DEMO_DB_BIN");
const db = process.env.ROWSTREAM_PROFILE_DB ?? path.join(os.tmpdir(), `rowstream-profile-${ROWS}.db`);
execFileSync(GEN, ["--db", db, "--rows", String(ROWS), "--if-missing"], { stdio: "inherit" });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rowstream-profile-"));
const www = path.join(tmp, "www");
// ROWSTREAM_PROFILE_WWW: another copy of the page (e.g. an older commit's).
const src = process.env.ROWSTREAM_PROFILE_WWW ?? path.join(root, "www");
fs.cpSync(src, www, { recursive: true, filter: (s) => !s.startsWith(path.join(src, "pkg")) });
fs.cpSync(path.join(root, "pkg"), path.join(www, "pkg"), { recursive: true });

const server = spawn(BIN, ["serve", "--db", db, "--static-dir", www, "--listen", "127.0.0.1:0", "--set", "stream.snapshot.ttl_ms=300000"], { stdio: ["ignore", "pipe", "inherit"] });
const base = await new Promise((resolve, reject) => {
  let out = "";
  server.stdout.on("data", (d) => {
    out += d;
    const m = /listening on (http:\/\/\S+)/.exec(out);
    if (m) resolve(m[1]);
  });
  server.once("exit", (c) => reject(new Error(`server exited ${c}`)));
});

const { chromium } = await import("playwright-core");
const browser = await chromium.launch({
  executablePath: process.env.ROWSTREAM_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`${base}/`);
  await page.waitForFunction(() => document.body.dataset.state === "idle", null, { timeout: 30_000 });

  // streamQuery alone: the options the page uses, rows counted and dropped.
  const alone = () =>
    page.evaluate(async () => {
      const pkg = await import(new URL("./pkg/index.js", location.href).href);
      await pkg.default();
      const t0 = performance.now();
      let n = 0;
      const stream = pkg.streamQuery(new URL("/v1/query/stream", location.href).href, {
        query: "SELECT * FROM events",
        shape: "array",
        bigint: true,
        count: "exact",
        progressMs: 250,
        onProgress: () => {},
      });
      for await (const _ of stream) n++;
      return { ms: performance.now() - t0, rows: n, verified: stream.summary.verified, wire: stream.summary.wireBytes, bytes: stream.summary.bytes };
    });
  // The page: Run on the "All events" example until the badge says verified.
  const pageRun = () =>
    page.evaluate(async () => {
      document.querySelector('button.chip[data-example="0"]').click();
      const t0 = performance.now();
      document.getElementById("run").click();
      await new Promise((resolve) => {
        const check = () => (["verified", "failed", "stopped"].includes(document.body.dataset.state) ? resolve() : setTimeout(check, 20));
        setTimeout(check, 50);
      });
      return {
        ms: performance.now() - t0,
        state: document.body.dataset.state,
        rows: Number(document.getElementById("stat-rows").dataset.value),
        elapsed: Number(document.getElementById("stat-elapsed").dataset.value),
      };
    });

  const a = [];
  const p = [];
  await alone(); // warm-up (wasm compile, page cache, SQLite cache)
  for (let i = 0; i < RUNS; i++) {
    const x = await alone();
    const y = await pageRun();
    if (!x.verified || x.rows !== ROWS || y.state !== "verified" || y.rows !== ROWS) {
      throw new Error(`bad run: ${JSON.stringify({ x, y })}`);
    }
    a.push(x.ms);
    p.push(y.ms);
    console.log(`run ${i + 1}: streamQuery alone ${x.ms.toFixed(0)} ms, page ${y.ms.toFixed(0)} ms (wire ${x.wire} of ${x.bytes} bytes)`);
  }
  console.log(`median: streamQuery alone ${median(a).toFixed(0)} ms, page ${median(p).toFixed(0)} ms, ratio ${(median(p) / median(a)).toFixed(2)}`);

  if (PROFILE) {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 500 });
    await cdp.send("Profiler.start");
    await pageRun();
    const { profile } = await cdp.send("Profiler.stop");
    fs.writeFileSync(PROFILE, JSON.stringify(profile));
    // Self time per function, top 25.
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const dt = profile.timeDeltas;
    profile.samples.forEach((id, i) => {
      const n = byId.get(id);
      const f = n.callFrame;
      const key = `${f.functionName || "(anon)"} ${path.basename(f.url || "")}:${f.lineNumber + 1}`;
      self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0) / 1000);
    });
    const total = [...self.values()].reduce((x, y) => x + y, 0);
    console.log(`profile: ${PROFILE} (${total.toFixed(0)} ms sampled)`);
    for (const [k, v] of [...self.entries()].sort((x, y) => y[1] - x[1]).slice(0, 25)) {
      console.log(`${v.toFixed(0).padStart(7)} ms ${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
    }
  }
} finally {
  await browser.close();
  server.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
}
