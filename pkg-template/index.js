// rowstream: verified, resumable NDJSON query streams for browsers and Node.
//
// This module is the hand-written face of the package; `./rowstream.js` is
// what wasm-bindgen generates from `src/wasm/` (the Rust core's bindings).

import wbgInit, {
  initSync as wbgInitSync,
  NdjsonFramer,
  PrefixHasher,
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
const COUNTS = new Set(["none", "estimated", "exact"]);
// Fresh-request fields of PROTOCOL 1.1 (wire name → option name). A 1.0
// server refuses them as unknown (`400 bad_request`, naming the field): the
// request is then sent again without it, as rowstream::client does.
const V11_FIELDS = [
  ["count", "count"],
  ["progress_ms", "progressMs"],
];
const HASH_MODES = new Set(["auto", "native", "wasm"]);

let nativeCrypto;

/**
 * `node:crypto` where the runtime hands it over synchronously
 * (`process.getBuiltinModule`, Node ≥ 20.16 / 22.3), else null. No `import`
 * of it anywhere, so bundlers building for browsers never see it.
 */
function nativeCryptoModule() {
  if (nativeCrypto === undefined) {
    nativeCrypto = null;
    try {
      const c = globalThis.process?.getBuiltinModule?.("node:crypto");
      if (typeof c?.createHash === "function") {
        c.createHash("sha256");
        nativeCrypto = c;
      }
    } catch {
      nativeCrypto = null;
    }
  }
  return nativeCrypto;
}

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
  if (options.count !== undefined && !COUNTS.has(options.count)) {
    throw new TypeError('streamQuery: options.count must be "none", "estimated" or "exact"');
  }
  for (const k of ["progressMs", "idleTimeoutMs"]) {
    const v = options[k];
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) {
      throw new TypeError(`streamQuery: options.${k} must be a positive integer (ms)`);
    }
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") {
    throw new TypeError("streamQuery: options.onProgress must be a function");
  }
  checkHashOption("streamQuery", options.hash);
}

/** Checks `options.hash` of `fn` ("auto", "native" or "wasm"). */
function checkHashOption(fn, hash) {
  if (hash !== undefined && !HASH_MODES.has(hash)) {
    throw new TypeError(`${fn}: options.hash must be "auto", "native" or "wasm"`);
  }
  if (hash === "native" && nativeCryptoModule() === null) {
    throw new TypeError(
      `${fn}: options.hash "native" needs node:crypto through process.getBuiltinModule (Node ≥ 20.16)`,
    );
  }
}

/** `node:crypto` when `hash` ("auto" or "native") lets it be used, else null (wasm). */
function nativeCryptoFor(hash) {
  return hash === "wasm" ? null : nativeCryptoModule();
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
      hash: null,
      totalRows: null,
      totalRowsExact: false,
      wireBytes: undefined,
      ignoredOptions: [],
    };
  }

  [Symbol.asyncIterator]() {
    if (this.#started) {
      throw new RowstreamError("already_iterated", "a RowStream can be iterated only once");
    }
    this.#started = true;
    return new RowIterator(this.#run(), this.#options.signal);
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

    // SHA-256 of the row lines: node:crypto where it is at hand (about 4×
    // faster than in wasm), else the decoder's own (browsers).
    const crypto = nativeCryptoFor(o.hash);
    let decoder;
    try {
      decoder = new StreamDecoder({
        ...(o.maxLineBytes === undefined ? {} : { maxLineBytes: o.maxLineBytes }),
        externalHashing: crypto !== null,
      });
    } catch (e) {
      throw fromBinding(e);
    }
    s.hash = crypto === null ? "wasm" : "native";
    const sha = crypto === null ? null : crypto.createHash("sha256");
    // With native hashing, each decoded batch's row bytes go to `sha`, and
    // its running digest back to the decoder, which checks an `end` line
    // against it (throwing digest_mismatch) before the batch is used.
    const hashed =
      sha === null
        ? (batch) => batch
        : (batch) => {
            const input = decoder.hashInput();
            if (input.length > 0 || batch.end !== undefined) {
              if (input.length > 0) sha.update(input);
              decoder.inputHashed(sha.copy().digest("hex"));
            }
            return batch;
          };
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
    if (o.count !== undefined && o.count !== "none") body.count = o.count;
    if (o.progressMs !== undefined) body.progress_ms = o.progressMs;

    // Progress: the server's progress lines when it sends them (PROTOCOL
    // 1.1, asked for with progressMs), else the client's own figures once
    // per network chunk (at most every progressMs when it was asked for).
    const onProgress = o.onProgress;
    const t0 = Date.now();
    let lastReport = -Infinity;
    let scanner = null;
    const report = (rows, bytes, source) => {
      lastReport = Date.now();
      onProgress({
        rows,
        bytes,
        totalRows: s.totalRows,
        totalRowsExact: s.totalRowsExact,
        elapsedMs: lastReport - t0,
        source,
      });
    };
    // Which resource-timing entries (browsers) this stream already counted.
    const timing = wireTiming(this.#url);

    let failures = 0;
    let openSeen = false;
    let inBandError = null;

    // Applies one decoded batch; returns its rows (null when it has none).
    const apply = (batch) => {
      if (batch.open !== undefined) {
        openSeen = true;
        const open = batch.open;
        if (s.resumable === null) {
          s.resumable = open.resumable;
          s.reason = open.reason ?? null;
          s.columns = open.columns;
          // (1.1) A resume repeats the first answer: the first one counts.
          if (open.total_rows !== undefined && open.total_rows !== null) {
            s.totalRows = Number(open.total_rows);
            s.totalRowsExact = open.total_rows_exact === true;
          }
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
        // Never trust an end line the decoder has not checked (with native
        // hashing it is checked by `inputHashed`, in `hashed` above).
        if (!decoder.complete) {
          throw new RowstreamError("digest_mismatch", "the end line's digest was not checked");
        }
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
        // One controller per attempt: the idle timeout drops this response
        // only; the caller's abort (ctl) reaches every attempt.
        const attempt = new AbortController();
        const onCtlAbort = () => attempt.abort(ctl.signal.reason);
        ctl.signal.addEventListener("abort", onCtlAbort, { once: true });
        const idle = new IdleTimer(o.idleTimeoutMs, attempt);
        let progressed = false;
        try {
          const requested = timing?.mark();
          try {
            res = await idle.race(
              fetchFn(this.#url, {
                method: "POST",
                headers: await this.#headers(),
                body: stringifyExact(body),
                signal: attempt.signal,
              }),
            );
          } catch (e) {
            if (aborted()) throw userSignal.reason;
            interruption = e;
          }
          if (res !== null && !res.ok) {
            idle.stop();
            const err = await errorFromResponse(res);
            // A PROTOCOL 1.0 server refuses a 1.1 field it does not know
            // (400 bad_request naming it): ask again without it.
            const unknown =
              body.cursor === undefined && res.status === 400 && err.code === "bad_request"
                ? V11_FIELDS.find(([wire]) => wire in body && err.message.includes(wire))
                : undefined;
            if (unknown !== undefined) {
              delete body[unknown[0]];
              s.ignoredOptions.push(unknown[1]);
              continue;
            }
            const retryable = body.cursor !== undefined && (res.status === 429 || res.status >= 500);
            if (!retryable) throw err;
            interruption = err;
          }
          if (res !== null && res.ok && res.body === null) {
            interruption = new RowstreamError("stream_interrupted", "the response has no body");
          } else if (res !== null && res.ok) {
            const reader = res.body.getReader();
            const bytesBefore = s.bytes;
            let serverProgress = false;
            if (onProgress !== undefined && body.progress_ms !== undefined) scanner = new ProgressScanner();
            try {
              for (;;) {
                let r;
                try {
                  r = await idle.race(reader.read());
                } catch (e) {
                  if (aborted()) throw userSignal.reason;
                  interruption = e;
                  break;
                }
                if (r.done) break;
                s.bytes += r.value.byteLength;
                s.chunks += 1;
                const progress = scanner?.push(r.value) ?? null;
                const rows = apply(decode(() => hashed(decoder.push(r.value))));
                if (onProgress !== undefined) {
                  if (progress !== null) {
                    serverProgress = true;
                    report(Number(progress.rows), bytesBefore + Number(progress.bytes), "server");
                  } else if (
                    !serverProgress &&
                    (o.progressMs === undefined || Date.now() - lastReport >= o.progressMs)
                  ) {
                    report(s.rowCount, s.bytes, "client");
                  }
                }
                if (rows !== null) {
                  progressed = true;
                  // RowIterator hands the rows out one by one; this resumes
                  // once the consumer asks for the row after the last one.
                  yield rows;
                  if (aborted()) throw userSignal.reason;
                }
                if (s.verified) {
                  completed = true;
                  idle.stop();
                  if (timing !== null) s.wireBytes = await timing.settle(reader, requested);
                  return;
                }
              }
            } finally {
              if (!completed) reader.cancel().catch(() => {});
            }
          }
          if (idle.fired) interruption = idle.error;
        } finally {
          idle.stop();
          ctl.signal.removeEventListener("abort", onCtlAbort);
        }
        if (aborted()) throw userSignal.reason;
        // A last control line may have arrived without its newline; a cut
        // row is dropped and the framer is reset for the next response.
        apply(decode(() => hashed(decoder.endOfBody())));
        if (s.verified) {
          completed = true;
          return;
        }
        if (inBandError !== null) throw serverError(inBandError, undefined, undefined);

        // The response broke off. Resume from what we hold, or give up.
        const resume =
          openSeen || decoder.cursor !== undefined ? decode(() => decoder.beginResume()) : null;
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
      timing?.close();
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
 * The idle timeout of one attempt (`idleTimeoutMs`): `race(p)` settles as
 * `p` does, or rejects with `stream_idle_timeout` (and aborts the attempt)
 * when nothing came for that long. Only time spent waiting on the network
 * counts, never the consumer's.
 */
class IdleTimer {
  constructor(ms, attempt) {
    this.ms = ms;
    this.attempt = attempt;
    this.fired = false;
    this.error = null;
    this.timer = undefined;
  }

  race(promise) {
    if (this.ms === undefined) return promise;
    return new Promise((resolve, reject) => {
      this.timer = setTimeout(() => {
        this.fired = true;
        this.error = new RowstreamError(
          "stream_idle_timeout",
          `no byte arrived for ${this.ms} ms (idleTimeoutMs): the connection is taken as dropped`,
        );
        this.attempt.abort(this.error);
        reject(this.error);
      }, this.ms);
      promise.then(
        (v) => {
          clearTimeout(this.timer);
          resolve(v);
        },
        (e) => {
          clearTimeout(this.timer);
          reject(e);
        },
      );
    });
  }

  stop() {
    clearTimeout(this.timer);
  }
}

const NEWLINE = 0x0a;
const PROGRESS_LINE_MAX = 1024;
const progressText = new TextDecoder();

/** The inner object of a `{"progress":{...}}` line, or null. */
function progressFrame(bytes) {
  if (bytes.length > PROGRESS_LINE_MAX) return null;
  try {
    const p = JSON.parse(progressText.decode(bytes)).progress;
    return p !== null && typeof p === "object" && typeof p.rows === "number" ? p : null;
  } catch {
    return null;
  }
}

/**
 * Finds the `{"progress":...}` control lines (PROTOCOL 1.1) in a response
 * body as it arrives, for `onProgress`; the decoder (wasm) verifies every
 * line and skips control lines it does not know, but hands none of them
 * back. A line starts after a newline and a row line starts `{"row"`, so
 * one starting `{"p` is a progress line. Costs one `indexOf` per line, and
 * runs only when progress lines were asked for.
 */
class ProgressScanner {
  constructor() {
    /** The start of a line cut by the chunk boundary that may be a progress line. */
    this.carry = null;
    this.atLineStart = true;
  }

  /** The last progress frame completed in `chunk`, or null. */
  push(chunk) {
    const n = chunk.length;
    let last = null;
    let i = 0;
    if (this.carry !== null) {
      const nl = chunk.indexOf(NEWLINE);
      const tail = nl < 0 ? chunk : chunk.subarray(0, nl);
      const carry = this.carry;
      this.carry = null;
      if (carry.length + tail.length <= PROGRESS_LINE_MAX) {
        const line = new Uint8Array(carry.length + tail.length);
        line.set(carry);
        line.set(tail, carry.length);
        if (nl < 0) {
          this.carry = line;
          return null;
        }
        last = progressFrame(line);
      }
      if (nl < 0) {
        this.atLineStart = false;
        return null;
      }
      i = nl + 1;
    } else if (!this.atLineStart) {
      const nl = chunk.indexOf(NEWLINE);
      if (nl < 0) return null;
      i = nl + 1;
    }
    while (i < n) {
      if (n - i < 3 || (chunk[i] === 0x7b && chunk[i + 1] === 0x22 && chunk[i + 2] === 0x70)) {
        // `{"p` (or too short to tell).
        const nl = chunk.indexOf(NEWLINE, i);
        if (nl < 0) {
          this.carry = chunk.slice(i);
          this.atLineStart = false;
          return last;
        }
        last = progressFrame(chunk.subarray(i, nl)) ?? last;
        i = nl + 1;
        continue;
      }
      const nl = chunk.indexOf(NEWLINE, i);
      if (nl < 0) {
        this.atLineStart = false;
        return last;
      }
      i = nl + 1;
    }
    this.atLineStart = true;
    return last;
  }
}

/**
 * Bytes on the wire (`summary.wireBytes`) where the runtime tells them: in
 * browsers, `encodedBodySize` of the PerformanceResourceTiming entries of
 * this stream's responses (same-origin, or with `Timing-Allow-Origin`;
 * browsers record an entry once a body has been read to its end, so a
 * response cut off mid-stream may be missing). Node's fetch records none
 * (and its bodies come decoded): null there, and `wireBytes` stays
 * undefined.
 */
function wireTiming(url) {
  const perf = globalThis.performance;
  if (isServerRuntime() || typeof globalThis.PerformanceObserver !== "function" || typeof perf?.now !== "function") {
    return null;
  }
  let name;
  try {
    name = new URL(url, globalThis.location?.href).href;
  } catch {
    return null;
  }
  const seen = [];
  let observer = null;
  const take = (entries) => {
    for (const e of entries) {
      if (e.name === name && e.initiatorType === "fetch" && !claimedTimings.has(e)) seen.push(e);
    }
  };
  return {
    /** Called before each request: the time its entry starts after. */
    mark() {
      if (observer === null) {
        try {
          observer = new PerformanceObserver((list) => take(list.getEntries()));
          observer.observe({ type: "resource" });
        } catch {
          observer = null;
        }
      }
      return perf.now();
    },
    /** After the end line: reads the body to its end, then sums the entries. */
    async settle(reader, since) {
      try {
        for (let k = 0; k < 4; k++) if ((await reader.read()).done) break;
      } catch {
        // Nothing after the end line matters.
      }
      try {
        for (let tries = 0; tries < 20; tries++) {
          take(observer?.takeRecords() ?? []);
          if (seen.some((e) => e.startTime >= since - 1)) break;
          await sleep(5);
        }
      } finally {
        this.close();
      }
      const last = seen.find((e) => e.startTime >= since - 1);
      if (last === undefined || (last.encodedBodySize === 0 && last.decodedBodySize === 0)) return undefined;
      let total = 0;
      for (const e of seen) {
        claimedTimings.add(e);
        total += e.encodedBodySize;
      }
      return total;
    },
    close() {
      observer?.disconnect();
    },
  };
}

/** Resource-timing entries some stream has already counted (one URL, several streams). */
const claimedTimings = new WeakSet();

const NO_ROWS = [];

/**
 * The iterator of a RowStream. The generator `batches` yields the rows of
 * one network chunk at a time (an array); `next()` hands them out one per
 * call as already-resolved promises, and only the step to the next chunk
 * goes through the generator. (An async generator yielding each row costs
 * several promise hops per row.) Calls are served in order, as an async
 * generator's are; an abort is noticed at the next call, as before.
 */
class RowIterator {
  #batches;
  #signal;
  #rows = NO_ROWS;
  #i = 0;
  /** The step to the next batch, while one is in flight. */
  #pending = null;

  constructor(batches, signal) {
    this.#batches = batches;
    this.#signal = signal;
  }

  /** Runs `fn` once the step in flight has settled. */
  #after(fn) {
    return this.#pending.then(fn, fn);
  }

  next() {
    if (this.#pending !== null) return this.#after(() => this.next());
    if (this.#i < this.#rows.length) {
      if (this.#signal?.aborted === true) return this.throw(this.#signal.reason);
      return Promise.resolve({ value: this.#rows[this.#i++], done: false });
    }
    const step = this.#nextBatch();
    this.#pending = step;
    const clear = () => {
      this.#pending = null;
    };
    step.then(clear, clear);
    return step;
  }

  async #nextBatch() {
    for (;;) {
      const r = await this.#batches.next();
      if (r.done) {
        this.#rows = NO_ROWS;
        this.#i = 0;
        return r;
      }
      this.#rows = r.value;
      this.#i = 0;
      if (this.#rows.length > 0) return { value: this.#rows[this.#i++], done: false };
    }
  }

  return(value) {
    if (this.#pending !== null) return this.#after(() => this.return(value));
    this.#rows = NO_ROWS;
    return this.#batches.return(value);
  }

  throw(error) {
    if (this.#pending !== null) return this.#after(() => this.throw(error));
    this.#rows = NO_ROWS;
    return this.#batches.throw(error);
  }
}

// Same prototype chain as a generator's (%AsyncIteratorPrototype%), so it
// has `[Symbol.asyncIterator]` and, where the engine has one,
// `[Symbol.asyncDispose]`.
Object.setPrototypeOf(
  RowIterator.prototype,
  Object.getPrototypeOf(Object.getPrototypeOf(async function* () {}).prototype),
);

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
        // One string per chunk crosses from wasm (a string per line costs
        // a TextDecoder call each, slow in browsers); no line holds "\n".
        let text;
        try {
          text = framer.pushJoined(chunk);
        } catch (e) {
          // The valid lines before the bad one still go out first.
          if (Array.isArray(e.lines)) emit(e.lines, controller);
          throw fromBinding(e);
        }
        if (text !== "") emit(text.split("\n"), controller);
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

// ---------------------------------------------------------------------------
// Input streams: `ingestRows` (PROTOCOL.md §4).

const VERIFY_MODES = new Set(["sha256", "none"]);
const UPLOAD_MODES = new Set(["auto", true, false]);
const COMPRESS_MODES = new Set(["gzip", "zstd", false]);
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
// A batch of row lines is hashed with one `updateLines` call and becomes one
// piece of the body: at most this many rows / UTF-16 units, and (for async
// sources) no older than BATCH_MS, so a slow source still trickles rows out
// (the server times an idle upload out).
const BATCH_ROWS = 1024;
const BATCH_CHARS = 64 * 1024;
const BATCH_MS = 50;
// The Blob fallback folds its string parts into a Blob every this many
// UTF-16 units, so the JS heap holds at most one such slice at a time.
const BLOB_SLICE_CHARS = 4 * 1024 * 1024;

/**
 * Uploads rows into `options.table` through `POST /v1/ingest/stream`,
 * atomically: the promise resolves to the server's `end` object (plus the
 * `sha256` of the row lines sent) once every row has landed, and otherwise
 * rejects with a `RowstreamError` (no row landed). `rows` is an array, an
 * iterable or an async iterable of row objects; only `options.columns` are
 * written. See the README for streaming vs `Blob` uploads.
 */
export async function ingestRows(url, rows, options) {
  checkIngestOptions(options);
  if (
    rows === null ||
    typeof rows !== "object" ||
    (typeof rows[Symbol.asyncIterator] !== "function" && typeof rows[Symbol.iterator] !== "function")
  ) {
    throw new TypeError("ingestRows: rows must be an array, an iterable or an async iterable of row objects");
  }
  const userSignal = options.signal;
  userSignal?.throwIfAborted();
  await init();
  const target = String(url);
  const fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  const headers = { "content-type": "application/x-ndjson", accept: "application/json" };
  let token = options.token;
  if (typeof token === "function") token = await token();
  if (typeof token === "string" && token !== "") headers.authorization = `Bearer ${token}`;
  userSignal?.throwIfAborted();

  const coding = options.compress === undefined || options.compress === false ? null : options.compress;
  // Throws invalid_argument before anything is sent when the runtime
  // cannot compress with `coding`.
  const compressor = coding === null ? null : compressorFor(coding);
  if (coding !== null) headers["content-encoding"] = coding;

  let mode = uploadMode(options.stream ?? "auto", target);
  let body = new IngestBody(rows, options);
  const ctl = new AbortController();
  const onAbort = () => {
    body.stop();
    ctl.abort(userSignal.reason);
  };
  userSignal?.addEventListener("abort", onAbort, { once: true });
  const aborted = () => userSignal?.aborted === true;
  try {
    let res;
    for (;;) {
      try {
        if (mode === "blob") {
          let blob = await body.toBlob();
          if (aborted()) throw userSignal.reason;
          if (body.error !== null) throw body.error;
          if (compressor !== null) {
            blob = await new Response(blob.stream().pipeThrough(compressor())).blob();
            if (aborted()) throw userSignal.reason;
          }
          res = await fetchFn(target, { method: "POST", headers, body: blob, signal: ctl.signal });
        } else {
          const stream = body.toStream(ctl);
          res = await fetchFn(target, {
            method: "POST",
            headers,
            body: compressor === null ? stream : stream.pipeThrough(compressor()),
            duplex: "half",
            signal: ctl.signal,
          });
        }
        break;
      } catch (e) {
        if (aborted()) throw userSignal.reason;
        if (body.error !== null) throw body.error;
        if (e instanceof RowstreamError) throw e;
        // A browser that takes stream bodies but cannot send them over this
        // connection (Chrome over HTTP/1.1) fails at once: no row has been
        // read from the source yet, so the upload is redone as a Blob.
        if (mode === "stream-or-blob" && e instanceof TypeError && !body.started) {
          body.dispose();
          body = new IngestBody(rows, options);
          mode = "blob";
          continue;
        }
        throw interrupted(e, body, mode);
      }
    }
    // The answer can come before the upload ends (an early refusal): stop
    // producing rows; the body is then closed at the next piece.
    body.stop();
    let text;
    try {
      if (!res.ok) throw await errorFromResponse(res);
      text = await res.text();
    } catch (e) {
      if (aborted()) throw userSignal.reason;
      if (e instanceof RowstreamError) throw e;
      throw interrupted(e, body, mode);
    }
    let answer;
    try {
      answer = JSON.parse(text);
    } catch (e) {
      throw new RowstreamError("protocol_error", "the ingest answer is not JSON", {
        cause: e,
        status: res.status,
      });
    }
    const end = answer !== null && typeof answer === "object" ? answer.end : undefined;
    if (end !== null && typeof end === "object" && typeof end.row_count === "number") {
      return { ...end, sha256: body.digest };
    }
    const error = answer !== null && typeof answer === "object" ? answer.error : undefined;
    if (error !== null && typeof error === "object") throw serverError(error, res.status, undefined);
    throw new RowstreamError("protocol_error", "the ingest answer has neither `end` nor `error`", {
      status: res.status,
    });
  } finally {
    userSignal?.removeEventListener("abort", onAbort);
    // An upload still open after the answer (or after any failure) is cut.
    if (!body.finished) ctl.abort(new RowstreamError("cancelled", "the ingest upload was stopped"));
    body.dispose();
  }
}

function interrupted(e, body, mode) {
  const endSent = body.endProduced;
  const hint =
    mode === "stream" && !body.started && e instanceof TypeError && !isServerRuntime()
      ? ' (browsers send streamed request bodies only over HTTP/2; use `stream: "auto"` or `false`)'
      : "";
  return new RowstreamError(
    "ingest_interrupted",
    `the ingest upload failed${hint}: ${e?.message ?? e}` +
      (endSent
        ? " (the end line was sent: the rows may have landed)"
        : " (the end line was not sent: no row landed)"),
    { cause: e, details: { outcome: endSent ? "unknown" : "rolled_back" } },
  );
}

function checkIngestOptions(options) {
  if (options === null || typeof options !== "object") {
    throw new TypeError("ingestRows: options must be an object");
  }
  if (typeof options.table !== "string" || options.table === "") {
    throw new TypeError("ingestRows: options.table must be a non-empty string");
  }
  const cols = options.columns;
  if (!Array.isArray(cols) || cols.length === 0) {
    throw new TypeError("ingestRows: options.columns must be a non-empty array of column names");
  }
  const seen = new Set();
  for (const c of cols) {
    if (typeof c !== "string" || c === "") {
      throw new TypeError("ingestRows: options.columns must hold non-empty strings");
    }
    if (seen.has(c)) throw new TypeError(`ingestRows: column "${c}" is listed twice`);
    seen.add(c);
  }
  if (options.verify !== undefined && !VERIFY_MODES.has(options.verify)) {
    throw new TypeError('ingestRows: options.verify must be "sha256" or "none"');
  }
  if (options.stream !== undefined && !UPLOAD_MODES.has(options.stream)) {
    throw new TypeError('ingestRows: options.stream must be "auto", true or false');
  }
  if (options.fetch !== undefined && typeof options.fetch !== "function") {
    throw new TypeError("ingestRows: options.fetch must be a function");
  }
  if (options.compress !== undefined && !COMPRESS_MODES.has(options.compress)) {
    throw new TypeError('ingestRows: options.compress must be "gzip", "zstd" or false');
  }
  checkHashOption("ingestRows", options.hash);
}

function isServerRuntime() {
  return isNode() || typeof globalThis.Deno === "object" || typeof globalThis.Bun === "object";
}

/**
 * `() => TransformStream` compressing an upload body with `coding`, or a
 * thrown `invalid_argument` error when the runtime cannot. Node: node:zlib
 * (gzip level 1, zstd where this Node has it: ≥ 22.15 / 23.8), flushed after
 * every piece of the body, so a slow source's rows reach the server as they
 * come (the server times idle uploads out). Elsewhere: `CompressionStream`
 * (gzip; zstd only where the browser accepts it, none does as of 2025),
 * which cannot be flushed: a slow source's rows may wait in it.
 */
function compressorFor(coding) {
  const zlib = nodeZlib();
  if (zlib !== null) {
    if (coding === "gzip") return () => zlibTransform(zlib.createGzip({ level: 1 }), zlib.constants.Z_SYNC_FLUSH);
    if (typeof zlib.createZstdCompress === "function") {
      return () => zlibTransform(zlib.createZstdCompress(), zlib.constants.ZSTD_e_flush);
    }
  }
  if (typeof globalThis.CompressionStream === "function") {
    try {
      new globalThis.CompressionStream(coding);
      return () => new globalThis.CompressionStream(coding);
    } catch {
      // Not a format this runtime's CompressionStream knows.
    }
  }
  const where = zlib !== null ? `this Node (${globalThis.process?.version}) has no zstd in node:zlib` : "this runtime's CompressionStream does not support it";
  throw new RowstreamError(
    "invalid_argument",
    `ingestRows: compress "${coding}" is not available: ${where}` + (coding === "zstd" ? '; use compress: "gzip"' : ""),
  );
}

/** `node:zlib` where the runtime hands it over synchronously, else null. */
function nodeZlib() {
  try {
    const z = globalThis.process?.getBuiltinModule?.("node:zlib");
    return typeof z?.createGzip === "function" ? z : null;
  } catch {
    return null;
  }
}

/** A node:zlib stream as a TransformStream, flushed (`flushKind`) after every chunk. */
function zlibTransform(z, flushKind) {
  let out = null;
  let failed = null;
  z.on("data", (d) => out?.enqueue(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
  z.on("error", (e) => {
    failed = e;
    try {
      out?.error(e);
    } catch {
      // Already errored.
    }
  });
  const settle = (fn) =>
    new Promise((resolve, reject) => {
      if (failed !== null) {
        reject(failed);
        return;
      }
      fn(() => (failed !== null ? reject(failed) : resolve()));
    });
  return new TransformStream({
    start(controller) {
      out = controller;
    },
    transform(chunk) {
      return settle((done) => {
        z.write(chunk);
        z.flush(flushKind, done);
      });
    },
    flush() {
      return settle((done) => {
        z.once("end", done);
        z.end();
      });
    },
    cancel() {
      z.destroy();
    },
  });
}

let streamedBodies = null;

/**
 * Whether `fetch` takes a `ReadableStream` request body (`duplex: "half"`).
 * Engines without support turn the stream into the text
 * "[object ReadableStream]" (and set a text Content-Type) or never read
 * `duplex`.
 */
function supportsStreamedBodies() {
  if (streamedBodies === null) {
    streamedBodies = false;
    try {
      let duplexRead = false;
      const req = new Request("http://localhost/", {
        method: "POST",
        body: new ReadableStream(),
        get duplex() {
          duplexRead = true;
          return "half";
        },
      });
      streamedBodies = duplexRead && !req.headers.has("content-type");
    } catch {
      streamedBodies = false;
    }
  }
  return streamedBodies;
}

/** "stream", "blob", or "stream-or-blob" (stream, redo as a Blob if refused at once). */
function uploadMode(option, url) {
  if (option === true) return "stream";
  if (option === false) return "blob";
  if (!supportsStreamedBodies()) return "blob";
  if (isServerRuntime()) return "stream";
  // Browsers stream uploads only over HTTP/2 (Chrome), which they speak only
  // over TLS: a plain-http URL can never stream.
  let protocol = "";
  try {
    protocol = new URL(url, globalThis.location?.href).protocol;
  } catch {
    protocol = "";
  }
  return protocol === "https:" ? "stream-or-blob" : "blob";
}

let yieldImpl = null;

/** Resolves on a later macrotask (not a microtask), without timer clamping. */
function yieldToEventLoop() {
  if (yieldImpl === null) {
    if (typeof globalThis.setImmediate === "function") {
      yieldImpl = () => new Promise((resolve) => globalThis.setImmediate(resolve));
    } else if (typeof MessageChannel === "function") {
      // A channel per call, closed at once: an open port could keep a
      // runtime's event loop alive.
      yieldImpl = () =>
        new Promise((resolve) => {
          const { port1, port2 } = new MessageChannel();
          port1.onmessage = () => {
            port1.close();
            port2.close();
            resolve();
          };
          port2.postMessage(null);
        });
    } else {
      yieldImpl = () => new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  return yieldImpl();
}

/** An internal marker for a value that is not JSON; `path` names where. */
class NotJson extends Error {
  constructor(path, message) {
    super(message);
    this.path = path;
  }
}

function describe(v) {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (typeof v !== "object") return `a ${typeof v}`;
  if (Array.isArray(v)) return "an array";
  const name = Object.getPrototypeOf(v)?.constructor?.name;
  return typeof name === "string" && name !== "" ? `a ${name}` : "an object";
}

function isPlainObject(v) {
  const proto = Object.getPrototypeOf(v);
  // Object.prototype of any realm (its own prototype is null), or none.
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/** Exact JSON text of a nested value (BigInt as digits); throws NotJson. */
function jsonOf(v, path, ancestors) {
  switch (typeof v) {
    case "string":
      return JSON.stringify(v);
    case "number":
      if (Number.isFinite(v)) return JSON.stringify(v);
      throw new NotJson(path, `${v} is not a JSON number`);
    case "boolean":
      return v ? "true" : "false";
    case "bigint":
      return v.toString();
    case "object": {
      if (v === null) return "null";
      if (ancestors.includes(v)) throw new NotJson(path, "a circular structure is not JSON");
      ancestors.push(v);
      try {
        if (Array.isArray(v)) {
          const parts = [];
          for (let i = 0; i < v.length; i++) {
            const item = v[i];
            if (item === undefined) {
              throw new NotJson(`${path}[${i}]`, "undefined (or a hole) in an array is not a JSON value");
            }
            parts.push(jsonOf(item, `${path}[${i}]`, ancestors));
          }
          return `[${parts.join(",")}]`;
        }
        if (!isPlainObject(v)) {
          throw new NotJson(
            path,
            `${describe(v)} is not a JSON value (convert it first, e.g. a Date with toISOString())`,
          );
        }
        const parts = [];
        for (const k of Object.keys(v)) {
          const item = v[k];
          if (item === undefined) continue;
          parts.push(`${JSON.stringify(k)}:${jsonOf(item, `${path}.${k}`, ancestors)}`);
        }
        return `{${parts.join(",")}}`;
      } finally {
        ancestors.pop();
      }
    }
    default:
      throw new NotJson(path, `${describe(v)} is not a JSON value`);
  }
}

function invalidRow(index, column, message) {
  return new RowstreamError(
    "invalid_row",
    `row ${index} (line ${index + 2})${column === undefined ? "" : `, column "${column}"`}: ${message}`,
    { details: column === undefined ? { line: index + 2, row: index } : { line: index + 2, row: index, column } },
  );
}

/** (row, index) => its line `{"row":{...}}`, with the listed columns only. */
function rowSerializer(columns) {
  const keys = columns.map((c) => `${JSON.stringify(c)}:`);
  const n = columns.length;
  return (row, index) => {
    if (row === null || typeof row !== "object" || Array.isArray(row)) {
      throw invalidRow(index, undefined, `${describe(row)} is not a row object`);
    }
    let out = '{"row":{';
    let first = true;
    for (let i = 0; i < n; i++) {
      const v = row[columns[i]];
      let text;
      if (v === undefined) {
        continue; // absent: NULL
      } else if (typeof v === "string") {
        text = JSON.stringify(v);
      } else if (typeof v === "bigint") {
        if (v < I64_MIN || v > I64_MAX) {
          throw invalidRow(index, columns[i], `${v} does not fit a 64-bit integer`);
        }
        text = v.toString();
      } else {
        try {
          text = jsonOf(v, columns[i], []);
        } catch (e) {
          if (!(e instanceof NotJson)) throw e;
          const where = e.path === columns[i] ? "" : ` (at ${e.path})`;
          throw invalidRow(index, columns[i], `${e.message}${where}`);
        }
      }
      out += first ? keys[i] + text : `,${keys[i]}${text}`;
      first = false;
    }
    return `${out}}}`;
  };
}

/**
 * The request body of one upload, produced piece by piece on demand: the
 * open line, batches of row lines (hashed as they are made), the end line.
 */
class IngestBody {
  constructor(rows, options) {
    this.rows = rows;
    this.verify = options.verify ?? "sha256";
    this.openLine = `${JSON.stringify({
      open: { table: options.table, columns: options.columns, verify: this.verify },
    })}\n`;
    this.serialize = rowSerializer(options.columns);
    // The row lines' SHA-256, as for streamQuery: node:crypto where it is at
    // hand, else wasm. A row line never ends in a newline (JSON escapes
    // them), so a batch's lines joined with nothing are exactly what
    // `PrefixHasher.updateLines` hashes.
    const crypto = nativeCryptoFor(options.hash);
    this.sha = crypto === null ? null : crypto.createHash("sha256");
    this.hasher = crypto === null ? new PrefixHasher() : null;
    /** Where the row lines were hashed. */
    this.hash = crypto === null ? "wasm" : "native";
    this.iterator = null;
    this.isAsync = false;
    this.exhausted = false;
    this.rowCount = 0;
    this.digest = undefined;
    /** The source has been asked for a row. */
    this.started = false;
    this.openProduced = false;
    this.endProduced = false;
    /** The body stream was closed after its end line. */
    this.finished = false;
    this.stopped = false;
    this.sourceClosed = false;
    this.error = null;
  }

  /** The next piece of the body, or null once it is complete or stopped. */
  async next() {
    if (this.stopped || this.endProduced) return null;
    if (!this.openProduced) {
      this.openProduced = true;
      return this.openLine;
    }
    if (this.iterator === null) {
      this.started = true;
      const rows = this.rows;
      if (typeof rows[Symbol.asyncIterator] === "function") {
        this.iterator = rows[Symbol.asyncIterator]();
        this.isAsync = true;
      } else {
        this.iterator = rows[Symbol.iterator]();
      }
    }
    const batch = [];
    let chars = 0;
    const since = this.isAsync ? Date.now() : 0;
    while (batch.length < BATCH_ROWS && chars < BATCH_CHARS) {
      let r;
      if (this.isAsync) {
        r = await this.iterator.next();
        if (this.stopped) return null;
      } else {
        r = this.iterator.next();
      }
      if (r.done) {
        this.exhausted = true;
        break;
      }
      const line = this.serialize(r.value, this.rowCount + batch.length);
      batch.push(line);
      chars += line.length;
      if (this.isAsync && Date.now() - since >= BATCH_MS) break;
    }
    let text = "";
    if (batch.length > 0) {
      if (this.sha !== null) {
        this.sha.update(batch.join(""), "utf8");
      } else {
        try {
          this.hasher.updateLines(batch);
        } catch (e) {
          throw fromBinding(e);
        }
      }
      this.rowCount += batch.length;
      text = `${batch.join("\n")}\n`;
    }
    if (this.exhausted) {
      this.digest = this.sha !== null ? this.sha.digest("hex") : this.hasher.hexDigest();
      text += this.verify === "none" ? '{"end":{}}\n' : `{"end":{"sha256":"${this.digest}"}}\n`;
      this.endProduced = true;
    }
    return text;
  }

  /** Stops producing; the source iterator is closed. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.closeSource();
  }

  closeSource() {
    const it = this.iterator;
    if (it === null || this.exhausted || this.sourceClosed) return;
    this.sourceClosed = true;
    try {
      // Not awaited: an async generator busy in its body would hold us up.
      const p = typeof it.return === "function" ? it.return() : undefined;
      if (p !== null && typeof p === "object" && typeof p.then === "function") p.then(undefined, () => {});
    } catch {
      // The source's own cleanup failing is not the upload's failure.
    }
  }

  fail(e) {
    if (this.error === null) this.error = e;
    this.stop();
  }

  dispose() {
    this.stop();
    if (this.hasher !== null) {
      this.hasher.free();
      this.hasher = null;
    }
  }

  /** The body as a stream of UTF-8 pieces, pulled as `fetch` sends them. */
  toStream(ctl) {
    const encoder = new TextEncoder();
    return new ReadableStream(
      {
        pull: async (controller) => {
          let text;
          try {
            // A macrotask turn per piece: otherwise a fast synchronous
            // source keeps fetch's write loop in microtasks, and the
            // server's early answer is never read.
            if (this.openProduced) await yieldToEventLoop();
            text = await this.next();
          } catch (e) {
            // Never an end line after a failure: the server rolls back.
            this.fail(e);
            ctl.abort(e);
            try {
              controller.error(e);
            } catch {
              // Already cancelled by fetch.
            }
            return;
          }
          try {
            if (text !== null) controller.enqueue(encoder.encode(text));
            if (text === null || this.endProduced) {
              controller.close();
              if (this.endProduced) this.finished = true;
            }
          } catch {
            // fetch cancelled the body (abort, early answer): nothing to do.
          }
        },
        cancel: () => {
          this.stop();
        },
      },
      // Nothing is produced before fetch asks for it.
      { highWaterMark: 0 },
    );
  }

  /**
   * The whole body as a Blob (the fallback for engines without streamed
   * uploads). Folded into a Blob slice every few MiB: browsers keep large
   * Blobs outside the JS heap (Chrome may spill them to disk).
   */
  async toBlob() {
    const slices = [];
    let parts = [];
    let chars = 0;
    for (;;) {
      let text;
      try {
        text = await this.next();
      } catch (e) {
        this.fail(e);
        break;
      }
      if (text === null) break;
      parts.push(text);
      chars += text.length;
      if (chars >= BLOB_SLICE_CHARS) {
        slices.push(new Blob(parts));
        parts = [];
        chars = 0;
      }
      if (this.endProduced) {
        this.finished = true;
        break;
      }
    }
    slices.push(new Blob(parts));
    return new Blob(slices, { type: "application/x-ndjson" });
  }
}
