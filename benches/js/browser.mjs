// Client benchmarks in headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core; no browser is downloaded):
// `node benches/js/browser.mjs DATA.ndjson PKG_DIR REPS [ONLY]` (ONLY as in node.mjs). Serves the page,
// the package, the npm libraries and the data from a loopback server; the
// page fetches the data once into memory before timing anything.
import { createReadStream, existsSync, statSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const [dataPath, pkgDir, reps = "7", only] = process.argv.slice(2);
const nm = path.join(here, "node_modules");

const routes = {
  "/pipelines.mjs": path.join(here, "pipelines.mjs"),
  "/page.mjs": path.join(here, "page.mjs"),
  "/hash-wasm.mjs": path.join(nm, "hash-wasm/dist/index.esm.js"),
  "/ndjson.mjs": path.join(nm, "ndjson-readablestream/dist/ndjson-readablestream.esm.js"),
  "/data": dataPath,
};
const types = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end('<!doctype html><meta charset="utf-8"><title>rowstream bench</title><script type="module" src="/page.mjs"></script>');
    return;
  }
  let file = routes[url.pathname];
  if (!file && url.pathname.startsWith("/pkg/")) {
    file = path.join(pkgDir, path.basename(url.pathname));
  }
  if (!file || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
  createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
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
try {
  const page = await browser.newPage();
  page.on("console", (m) => process.stderr.write(`chromium: ${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`chromium error: ${e}\n`));
  await page.goto(`${base}/`);
  await page.waitForFunction(() => typeof window.runBench === "function");
  const out = await page.evaluate(([n, o]) => window.runBench(n, o), [Number(reps), only?.split(",")]);
  out.env = { version: `Chromium ${browser.version()}` };
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
  server.close();
}
