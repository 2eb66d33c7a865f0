// rowstream: verified, resumable NDJSON query streams for browsers and Node.
//
// This module is the hand-written face of the package; `./rowstream.js` is
// what wasm-bindgen generates from `src/wasm/` (the Rust core's bindings).

import wbgInit, {
  initSync as wbgInitSync,
  NdjsonFramer,
  StreamDecoder,
} from "./rowstream.js";
import { parseExact } from "./exact-json.js";

export {
  NdjsonFramer,
  PrefixHasher,
  ChunkProducer,
  StreamDecoder,
  CursorRegistry,
  assessResumability,
  parseJwtExpMs,
} from "./rowstream.js";
export { parseExact } from "./exact-json.js";

const WASM_FILE = "rowstream_bg.wasm";

let ready = null;
let initialized = false;

function isNode() {
  return (
    typeof process === "object" &&
    process !== null &&
    typeof process.versions === "object" &&
    typeof process.versions.node === "string"
  );
}

/**
 * Loads the WebAssembly module once. In a browser it is fetched from next to
 * this file (`new URL("rowstream_bg.wasm", import.meta.url)`); in Node it is
 * read from disk. `input` overrides the source: bytes, a `WebAssembly.Module`,
 * a URL or a `Response`.
 */
export default function init(input) {
  if (ready === null) {
    ready = (async () => {
      let source = input;
      if (source === undefined) {
        const url = new URL(WASM_FILE, import.meta.url);
        if (isNode() && url.protocol === "file:") {
          const { readFile } = await import(/* webpackIgnore: true */ "node:fs/promises");
          source = await readFile(url);
        } else {
          source = url;
        }
      }
      await wbgInit({ module_or_path: source });
      initialized = true;
    })();
    // A failed load can be retried.
    ready.catch(() => {
      ready = null;
    });
  }
  return ready;
}

/** Synchronous init from bytes or a compiled `WebAssembly.Module`. */
export function initSync(module) {
  if (!initialized) {
    wbgInitSync({ module });
    initialized = true;
    ready = Promise.resolve();
  }
}

function requireInit() {
  if (!initialized) {
    throw new RowstreamError(
      "not_initialized",
      "rowstream is not initialized: call `await init()` first",
    );
  }
}

/**
 * Every error of the streaming client: `code` is a stable snake_case string
 * (the server's code for server errors), `status` the HTTP status and
 * `details` the server's extra fields when the error came from the server.
 */
export class RowstreamError extends Error {
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RowstreamError";
    this.code = code;
    if (options.status !== undefined) this.status = options.status;
    if (options.details !== undefined) this.details = options.details;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

/** Wraps an error thrown by the bindings (an `Error` with `code`). */
function fromBinding(e) {
  if (e instanceof RowstreamError) return e;
  if (e instanceof Error && typeof e.code === "string") {
    const err = new RowstreamError(e.code, e.message, { cause: e });
    if (typeof e.line === "number") err.details = { line: e.line };
    return err;
  }
  return e;
}

function serverError(body, status, retryAfterMs) {
  const { code, message, ...details } = body;
  return new RowstreamError(
    typeof code === "string" ? code : "server_error",
    typeof message === "string" ? message : `server error (${code})`,
    {
      status,
      details: Object.keys(details).length > 0 ? details : undefined,
      retryAfterMs,
    },
  );
}

async function errorFromResponse(res) {
  const retryAfter = Number(res.headers.get("retry-after"));
  const retryAfterMs =
    Number.isFinite(retryAfter) && retryAfter >= 0 && res.headers.has("retry-after")
      ? retryAfter * 1000
      : undefined;
  let body;
  try {
    body = JSON.parse(await res.text());
  } catch {
    body = undefined;
  }
  const e = body !== null && typeof body === "object" ? body.error : undefined;
  if (e !== null && typeof e === "object") return serverError(e, res.status, retryAfterMs);
  return new RowstreamError(`http_${res.status}`, `HTTP ${res.status} ${res.statusText}`, {
    status: res.status,
    retryAfterMs,
  });
}

function makeParser(bigint) {
  return bigint ? parseExact : (text) => JSON.parse(text);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * JSON.stringify that writes BigInt values as exact integer literals (for
 * 64-bit query parameters); JSON.rawJSON is not available on Node 20.
 */
function stringifyExact(value) {
  const nonce = `__rowstream_bigint_${Math.random().toString(36).slice(2)}_`;
  let sawBigInt = false;
  const text = JSON.stringify(value, (_key, v) => {
    if (typeof v !== "bigint") return v;
    sawBigInt = true;
    return `${nonce}${v}`;
  });
  if (!sawBigInt) return text;
  return text.replace(new RegExp(`"${nonce}(-?\\d+)"`, "g"), "$1");
}

const SHAPES = new Set(["object", "array"]);

function checkOptions(options) {
  if (options === null || typeof options !== "object") {
    throw new TypeError("streamQuery: options must be an object");
  }
  if (typeof options.query !== "string") {
    throw new TypeError("streamQuery: options.query must be a string");
  }
  if (options.shape !== undefined && !SHAPES.has(options.shape)) {
    throw new TypeError('streamQuery: options.shape must be "object" or "array"');
  }
  for (const k of ["maxRetries", "backoffMs", "maxLineBytes"]) {
    const v = options[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) {
      throw new TypeError(`streamQuery: options.${k} must be a non-negative integer`);
    }
  }
  if (options.fetch !== undefined && typeof options.fetch !== "function") {
    throw new TypeError("streamQuery: options.fetch must be a function");
  }
}

/**
 * Streams the rows of `options.query` from a rowstream server. The result is
 * an async iterable of rows with a `summary`; every row line is hashed as it
 * arrives and the stream only ends normally once the server's `end` line
 * matches (`summary.verified`). Interruptions are resumed transparently.
 */
export function streamQuery(url, options) {
  checkOptions(options);
  return new RowStream(String(url), options);
}

class RowStream {
  #url;
  #options;
  #started = false;

  constructor(url, options) {
    this.#url = url;
    this.#options = options;
    this.summary = {
      rowCount: 0,
      prefixHash: null,
      verified: false,
      resumes: 0,
      bytes: 0,
      chunks: 0,
      columns: [],
      resumedFrom: [],
      resumable: null,
      reason: null,
      cursor: null,
      endReason: null,
    };
  }

  [Symbol.asyncIterator]() {
    if (this.#started) {
      throw new RowstreamError("already_iterated", "a RowStream can be iterated only once");
    }
    this.#started = true;
    return this.#run();
  }

  async #headers() {
    const h = { "content-type": "application/json", accept: "application/x-ndjson" };
    let token = this.#options.token;
    if (typeof token === "function") token = await token();
    if (typeof token === "string" && token !== "") h.authorization = `Bearer ${token}`;
    return h;
  }

  async #cancel(fetchFn, cursor) {
    try {
      const init = {
        method: "POST",
        headers: await this.#headers(),
        body: JSON.stringify({ cursor }),
      };
      if (typeof AbortSignal.timeout === "function") init.signal = AbortSignal.timeout(5000);
      const res = await fetchFn(`${this.#url}/cancel`, init);
      await res.body?.cancel();
    } catch {
      // Best effort: the cursor expires with its TTL anyway.
    }
  }

  async *#run() {
    const o = this.#options;
    const s = this.summary;
    const fetchFn = o.fetch ?? globalThis.fetch.bind(globalThis);
    const maxRetries = o.maxRetries ?? 5;
    const backoffMs = o.backoffMs ?? 250;
    const parse = makeParser(o.bigint === true);
    const userSignal = o.signal;
    userSignal?.throwIfAborted();
    await init();

    let decoder;
    try {
      decoder = new StreamDecoder(
        o.maxLineBytes === undefined ? undefined : { maxLineBytes: o.maxLineBytes },
      );
    } catch (e) {
      throw fromBinding(e);
    }
    const ctl = new AbortController();
    let completed = false;
    // The cancel request goes out once, as soon as the caller aborts (even
    // while the consumer is busy between rows), or when the iteration ends
    // early for any other reason.
    let cancelling = null;
    const cancelOnce = () => {
      if (cancelling === null && !completed && s.cursor !== null) {
        cancelling = this.#cancel(fetchFn, s.cursor);
      }
      return cancelling;
    };
    const onAbort = () => {
      ctl.abort(userSignal.reason);
      cancelOnce();
    };
    userSignal?.addEventListener("abort", onAbort, { once: true });
    const aborted = () => userSignal?.aborted === true;

    let body = { query: o.query };
    if (o.params !== undefined) body.params = o.params;
    if (o.shape !== undefined) body.shape = o.shape;

    let failures = 0;
    let openSeen = false;
    let inBandError = null;

    // Applies one decoded batch; returns the rows to yield.
    const apply = (batch) => {
      if (batch.open !== undefined) {
        openSeen = true;
        const open = batch.open;
        if (s.resumable === null) {
          s.resumable = open.resumable;
          s.reason = open.reason ?? null;
          s.columns = open.columns;
        }
        if (open.cursor) s.cursor = open.cursor;
      }
      if (batch.error !== undefined) inBandError = batch.error;
      let rows = null;
      if (batch.rowCount > 0) {
        try {
          rows = parse(batch.rows);
        } catch (e) {
          throw new RowstreamError("malformed_line", `a row is not valid JSON: ${e.message}`, {
            cause: e,
          });
        }
        if (!Array.isArray(rows) || rows.length !== batch.rowCount) {
          throw new RowstreamError("malformed_line", "a row line holds more than one value");
        }
        s.rowCount += batch.rowCount;
        // Live digest of the rows so far (one SHA-256 finalisation per chunk).
        s.prefixHash = decoder.prefixHash;
      }
      if (batch.end !== undefined) {
        const end = batch.end;
        s.endReason = end.reason;
        s.prefixHash = end.prefix_hash;
        if (end.reason === "ok") {
          s.verified = true;
        } else if (end.reason === "error" && inBandError !== null) {
          throw serverError(inBandError, undefined, undefined);
        } else {
          throw new RowstreamError(
            end.reason === "error" ? "stream_error" : end.reason,
            `the server ended the stream early (${end.reason})`,
          );
        }
      }
      return rows;
    };

    const decode = (fn) => {
      try {
        return fn();
      } catch (e) {
        throw fromBinding(e);
      }
    };

    try {
      for (;;) {
        let interruption = null;
        let res = null;
        try {
          res = await fetchFn(this.#url, {
            method: "POST",
            headers: await this.#headers(),
            body: stringifyExact(body),
            signal: ctl.signal,
          });
        } catch (e) {
          if (aborted()) throw userSignal.reason;
          interruption = e;
        }
        if (res !== null && !res.ok) {
          const err = await errorFromResponse(res);
          const retryable = body.cursor !== undefined && (res.status === 429 || res.status >= 500);
          if (!retryable) throw err;
          interruption = err;
        }
        let progressed = false;
        if (res !== null && res.ok && res.body === null) {
          interruption = new RowstreamError("stream_interrupted", "the response has no body");
        } else if (res !== null && res.ok) {
          const reader = res.body.getReader();
          try {
            for (;;) {
              let r;
              try {
                r = await reader.read();
              } catch (e) {
                if (aborted()) throw userSignal.reason;
                interruption = e;
                break;
              }
              if (r.done) break;
              s.bytes += r.value.byteLength;
              s.chunks += 1;
              const rows = apply(decode(() => decoder.push(r.value)));
              if (rows !== null) {
                progressed = true;
                for (const row of rows) {
                  yield row;
                  if (aborted()) throw userSignal.reason;
                }
              }
              if (s.verified) {
                completed = true;
                return;
              }
            }
          } finally {
            if (!completed) reader.cancel().catch(() => {});
          }
        }
        if (aborted()) throw userSignal.reason;
        // A last control line may have arrived without its newline; a cut
        // row is dropped and the framer is reset for the next response.
        apply(decode(() => decoder.endOfBody()));
        if (s.verified) {
          completed = true;
          return;
        }
        if (inBandError !== null) throw serverError(inBandError, undefined, undefined);

        // The response broke off. Resume from what we hold, or give up.
        const resume = openSeen || decoder.cursor !== undefined ? decoder.beginResume() : null;
        const why = interruption?.message ?? "the body ended without an end line";
        if (resume === null && decoder.rowCount > 0) {
          throw new RowstreamError(
            "stream_interrupted",
            `the stream broke off after ${decoder.rowCount} rows and is not resumable` +
              (s.reason ? ` (${s.reason})` : "") +
              `: ${why}`,
            { cause: interruption ?? undefined, details: { reason: s.reason } },
          );
        }
        if (resume === null && openSeen) {
          throw new RowstreamError(
            "stream_interrupted",
            `the stream broke off and is not resumable` +
              (s.reason ? ` (${s.reason})` : "") +
              `: ${why}`,
            { cause: interruption ?? undefined, details: { reason: s.reason } },
          );
        }
        failures = progressed ? 1 : failures + 1;
        if (failures > maxRetries) {
          if (interruption instanceof RowstreamError && interruption.status !== undefined) {
            throw interruption;
          }
          throw new RowstreamError(
            "stream_interrupted",
            `gave up after ${maxRetries} retries without progress: ${why}`,
            { cause: interruption ?? undefined },
          );
        }
        let delay = Math.min(backoffMs * 2 ** (failures - 1), 30_000);
        delay = delay / 2 + Math.random() * (delay / 2);
        if (interruption instanceof RowstreamError && interruption.retryAfterMs !== undefined) {
          delay = Math.max(delay, Math.min(interruption.retryAfterMs, 30_000));
        }
        await sleep(delay, userSignal);
        if (resume !== null) {
          s.resumes += 1;
          s.resumedFrom.push(resume.after_rows);
          body = resume;
        }
        openSeen = false;
      }
    } finally {
      userSignal?.removeEventListener("abort", onAbort);
      try {
        if (!s.verified) s.prefixHash = decoder.prefixHash;
        if (!completed) {
          ctl.abort();
          await cancelOnce();
        }
      } finally {
        decoder.free();
      }
    }
  }
}

/**
 * A `TransformStream` from NDJSON bytes to parsed lines, for people who
 * `pipeThrough` their own `fetch` bodies. Lines are parsed with `JSON.parse`,
 * or exactly (BigInt for unsafe integers) with `{ bigint: true }`. Call
 * `await init()` first.
 */
export class NdjsonDecoderStream extends TransformStream {
  constructor(options = {}) {
    requireInit();
    const parse = makeParser(options.bigint === true);
    let framer;
    try {
      framer = new NdjsonFramer(
        options.maxLineBytes === undefined ? undefined : { maxLineBytes: options.maxLineBytes },
      );
    } catch (e) {
      throw fromBinding(e);
    }
    let n = 0;
    const emit = (lines, controller) => {
      for (const line of lines) {
        n += 1;
        let v;
        try {
          v = parse(line);
        } catch (e) {
          throw new RowstreamError("malformed_line", `line ${n} is not JSON: ${e.message}`, {
            cause: e,
            details: { line: n },
          });
        }
        controller.enqueue(v);
      }
    };
    super({
      transform(chunk, controller) {
        let lines;
        try {
          lines = framer.push(chunk);
        } catch (e) {
          // The valid lines before the bad one still go out first.
          if (Array.isArray(e.lines)) emit(e.lines, controller);
          throw fromBinding(e);
        }
        emit(lines, controller);
      },
      flush(controller) {
        let lines;
        try {
          lines = framer.finish();
        } catch (e) {
          throw fromBinding(e);
        } finally {
          framer.free();
        }
        emit(lines, controller);
      },
    });
  }
}
