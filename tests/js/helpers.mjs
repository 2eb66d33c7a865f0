// Shared helpers of the JS suites: the built package, the shared vectors.
import { readFileSync, existsSync } from "node:fs";
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = new URL("../../", import.meta.url);
const pkgEntry = new URL("pkg/index.js", root);

if (!existsSync(fileURLToPath(pkgEntry))) {
  throw new Error(
    `the built package is missing (${fileURLToPath(pkgEntry)}): run scripts/build-pkg.sh first`,
  );
}

/** The built package, initialized. */
export const rowstream = await import(pkgEntry.href);
await rowstream.default();

export function vectors(name) {
  return JSON.parse(readFileSync(new URL(`tests/vectors/${name}`, root), "utf8"));
}

export const encoder = new TextEncoder();

/** Splits `bytes` at the given offsets. */
export function splitAt(bytes, cuts) {
  const out = [];
  let prev = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push(bytes.subarray(prev, c));
    prev = c;
  }
  return out;
}

/** A readable byte stream of the given chunks. */
export function streamOf(chunks) {
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(c);
      controller.close();
    },
  });
}

export async function collect(iterable) {
  const out = [];
  for await (const v of iterable) out.push(v);
  return out;
}

/** Deterministic PRNG (mulberry32) so failures can be replayed. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Starts headless Chromium in its own process group, so that stopping it
 * also stops its helper processes (which otherwise keep writing into the
 * profile directory after the main process has exited).
 */
export function launchChromium(chromeBin, args) {
  return spawn(chromeBin, args, { stdio: "ignore", detached: true });
}

/** Stops a `launchChromium` process group, then removes its profile directory. */
export async function stopChromium(chrome, profileDir) {
  if (chrome.exitCode === null && chrome.signalCode === null) {
    const exited = new Promise((r) => chrome.once("exit", r));
    try {
      process.kill(-chrome.pid, "SIGKILL");
    } catch {
      chrome.kill("SIGKILL");
    }
    await exited;
  }
  await rm(profileDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}
