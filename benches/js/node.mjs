// Client benchmarks in Node: `node benches/js/node.mjs DATA.ndjson PKG_DIR REPS [ONLY]`
// (ONLY: comma-separated pipeline names, to run a subset while profiling).
// Prints progress on stderr and one JSON line (results + package size) on stdout.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import zlib from "node:zlib";
import { createSHA256 } from "hash-wasm";
import readNDJSONStream from "ndjson-readablestream";
import { runAll } from "./pipelines.mjs";

const [dataPath, pkgDir, reps = "7", only] = process.argv.slice(2);
const rs = await import(pathToFileURL(path.join(pkgDir, "index.js")).href);
await rs.default();
const data = new Uint8Array(readFileSync(dataPath));
const out = await runAll({
  data,
  rs,
  createSHA256,
  createHash,
  readNDJSONStream,
  reps: Number(reps),
  only: only?.split(","),
  log: (m) => process.stderr.write(`node: ${m}\n`),
});

const gz = (files) =>
  files.reduce((n, f) => n + zlib.gzipSync(readFileSync(path.join(pkgDir, f)), { level: 9 }).length, 0);
const raw = (files) => files.reduce((n, f) => n + readFileSync(path.join(pkgDir, f)).length, 0);
const js = ["rowstream.js", "index.js", "exact-json.js"];
const wasm = ["rowstream_bg.wasm"];
out.size = { wasm: raw(wasm), wasm_gz: gz(wasm), js: raw(js), js_gz: gz(js) };
out.size.total_gz = out.size.wasm_gz + out.size.js_gz;
out.env = { version: `Node ${process.version}` };
console.log(JSON.stringify(out));
