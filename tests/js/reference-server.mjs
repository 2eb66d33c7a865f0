// A small in-memory implementation of the server side of PROTOCOL.md, built
// on the package's own ChunkProducer and PrefixHasher, exposed as a `fetch`.
// It lets the client suite inject faults precisely (cut bodies, network
// errors, flipped bytes, refusals) without a real server; server.test.mjs
// runs the same scenarios against the real one.
import { rowstream } from "./helpers.mjs";

const { ChunkProducer, PrefixHasher } = rowstream;
const enc = new TextEncoder();

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function refusal(status, code, message, extra = {}, headers = {}) {
  return json(status, { error: { code, message, ...extra } }, headers);
}

/**
 * options.rows: the result rows (objects); options.resumable; options.reason;
 * options.faults[i]: what happens to the i-th streamed response:
 *   { cutAt: N }      the body ends after N bytes (no end line)
 *   { failAt: N }     the body errors (a network error) after N bytes
 *   { flipAt: N }     byte N is changed (choose one inside a row value)
 *   { stallAt: N }    the body stops after N bytes until the request aborts
 *   { refuse: [status, code, extra] }  the request is refused
 *   { inBandError: [code, message] }   rows, then an error line and end(error)
 *   { endReason: R }  the stream ends with reason R
 * PROTOCOL 1.1: a fresh request's `count` puts `total_rows` (options.total,
 * default the row count) and `total_rows_exact` (count "exact") in every
 * open line; `progress_ms` adds a progress line after every
 * options.progressEvery rows (default 10; time plays no part here);
 * options.heartbeatEvery adds a heartbeat line after every that many rows.
 * options.protocol "1.0": `count` / `progress_ms` are refused as unknown
 * fields (400 bad_request naming the first), as a 1.0 server does.
 */
export function referenceServer(options) {
  const rows = options.rows;
  const resumable = options.resumable ?? true;
  const faults = options.faults ?? [];
  const cursor = "c0ffee".repeat(8);
  const log = [];
  let streamed = 0;
  let cancelled = false;
  // The fresh request's 1.1 fields, repeated on resumes (the cursor's).
  let asked = {};

  const lineOf = (i, shape) =>
    JSON.stringify({ row: shape === "array" ? Object.values(rows[i]) : rows[i] });

  function body(from, shape, fault) {
    const count = asked.count;
    const progressEvery = asked.progress_ms === undefined ? 0 : (options.progressEvery ?? 10);
    const heartbeatEvery = options.heartbeatEvery ?? 0;
    let bytes = 0;
    const add = (produced) => {
      for (const c of produced) bytes += c.length;
      chunks.push(...produced);
    };
    const producer = new ChunkProducer({ bufferBytes: 256, maxRows: 4 });
    const hasher = new PrefixHasher();
    for (let i = 0; i < from; i++) hasher.updateLine(lineOf(i, shape));
    const chunks = [];
    const open = {
      lease: "1".repeat(32),
      snapshot_lsn: 7,
      resumable,
      ...(resumable ? {} : { reason: options.reason ?? "aggregate" }),
      cursor: resumable ? cursor : null,
      expires_at_ms: Date.now() + 60_000,
      columns: Object.keys(rows[0] ?? {}).map((name) => ({ name, type: "" })),
      after_rows: from,
    };
    if (count !== undefined && count !== "none") {
      open.total_rows = options.total === undefined ? rows.length : options.total;
      open.total_rows_exact = count === "exact" && open.total_rows !== null;
    }
    add(producer.pushControl(JSON.stringify({ open })));
    for (let i = from; i < rows.length; i++) {
      const line = lineOf(i, shape);
      hasher.updateLine(line);
      add(producer.pushRow(line));
      const n = i + 1 - from;
      if (heartbeatEvery > 0 && n % heartbeatEvery === 0) add(producer.pushControl('{"heartbeat":{}}'));
      if (progressEvery > 0 && n % progressEvery === 0 && i + 1 < rows.length) {
        add(producer.pushControl(JSON.stringify({ progress: { rows: i + 1, bytes, elapsed_ms: n } })));
      }
    }
    let reason = fault?.endReason ?? "ok";
    if (fault?.inBandError) {
      const [code, message] = fault.inBandError;
      chunks.push(...producer.pushControl(JSON.stringify({ error: { code, message } })));
      reason = "error";
    }
    const end = { reason, row_count: rows.length, prefix_hash: hasher.hexDigest(), lease: "1".repeat(32), bytes: 0 };
    chunks.push(...producer.pushControl(JSON.stringify({ end })));
    chunks.push(...producer.finish());
    hasher.free();
    producer.free();
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let o = 0;
    for (const c of chunks) {
      all.set(c, o);
      o += c.length;
    }
    return { all, chunkLengths: chunks.map((c) => c.length) };
  }

  function respond(from, shape, fault, signal) {
    const { all, chunkLengths } = body(from, shape, fault);
    if (fault?.flipAt !== undefined) all[fault.flipAt] ^= 0x01;
    const stopAt = fault?.cutAt ?? fault?.failAt ?? fault?.stallAt ?? all.length;
    let offset = 0;
    let k = 0;
    const stream = new ReadableStream({
      start(controller) {
        signal?.addEventListener("abort", () => {
          try {
            controller.error(signal.reason);
          } catch {}
        });
      },
      async pull(controller) {
        await new Promise((r) => setTimeout(r, 0));
        if (offset >= stopAt) {
          if (fault?.failAt !== undefined) controller.error(new TypeError("terminated"));
          else if (fault?.stallAt !== undefined) await new Promise(() => {});
          else controller.close();
          return;
        }
        const n = Math.min(chunkLengths[k++] ?? all.length, stopAt - offset);
        controller.enqueue(all.slice(offset, offset + n));
        offset += n;
      },
    });
    return new Response(stream, {
      status: 200,
      headers: { "content-type": "application/x-ndjson" },
    });
  }

  async function fetch(url, init) {
    const req = JSON.parse(init.body);
    log.push({ url, body: req, authorization: init.headers?.authorization });
    if (url.endsWith("/cancel")) {
      if (req.cursor !== cursor || !resumable) return refusal(404, "cursor_not_found", "cursor not found");
      cancelled = true;
      return json(200, { cancelled: true });
    }
    const fault = faults[streamed++];
    if (fault?.refuse) {
      const [status, code, extra, headers] = fault.refuse;
      return refusal(status, code, `refused: ${code}`, extra, headers);
    }
    if (req.cursor !== undefined) {
      if (req.cursor !== cursor || !resumable) return refusal(404, "cursor_not_found", "cursor not found");
      if (cancelled) return refusal(409, "cursor_cancelled", "cursor was cancelled");
      const h = new PrefixHasher();
      for (let i = 0; i < req.after_rows; i++) h.updateLine(lineOf(i, options.shape));
      const ok = h.matchesHex(req.prefix_hash);
      h.free();
      if (!ok) return refusal(409, "prefix_hash_mismatch", "prefix hash mismatch");
      return respond(req.after_rows, options.shape, fault, init.signal);
    }
    if (options.protocol === "1.0") {
      const unknown = Object.keys(req).find((k) => !["query", "params", "shape"].includes(k));
      if (unknown !== undefined) {
        return refusal(400, "bad_request", `invalid request body: unknown field \`${unknown}\`, expected one of \`query\`, \`params\`, \`shape\``);
      }
    }
    options.shape = req.shape;
    asked = { count: req.count, progress_ms: req.progress_ms };
    return respond(0, req.shape, fault, init.signal);
  }

  return {
    fetch,
    log,
    get cancelled() {
      return cancelled;
    },
    cursor,
    bodyLength: (from = 0, shape) => body(from, shape).all.length,
    /** The whole body of a fresh stream, as the client would receive it. */
    bodyBytes: (shape) => body(0, shape).all,
    expectedHash(shape) {
      const h = new PrefixHasher();
      for (let i = 0; i < rows.length; i++) h.updateLine(lineOf(i, shape));
      const hex = h.hexDigest();
      h.free();
      return hex;
    },
  };
}

export const sampleRows = (n) =>
  Array.from({ length: n }, (_, i) => ({ id: i, name: `row-${i}`, s: `h\u00e9llo \u{1F600} ${i}` }));

export const encodeText = (s) => enc.encode(s);
