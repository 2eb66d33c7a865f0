// The page side of browser.mjs.
import init, * as rs from "/pkg/index.js";
import { createSHA256 } from "/hash-wasm.mjs";
import readNDJSONStream from "/ndjson.mjs";
import { runAll } from "/pipelines.mjs";

window.runBench = async (reps, only) => {
  await init();
  const data = new Uint8Array(await (await fetch("/data")).arrayBuffer());
  return runAll({ data, rs, createSHA256, readNDJSONStream, reps, only, log: (m) => console.log(m) });
};
