// The rowstream demo page.
//
// Streams a query through the npm package's `streamQuery()` (imported from
// ./pkg/, the built package, no bundler), renders the rows in a windowed
// table backed by a fixed-size ring, and shows the protocol at work: live
// figures, the digest badge, resumes after a dropped connection, refusals.
//
// Page URL parameters: `?server=http://host:port` streams from another
// rowstream server (CORS is permissive), `?token=...` sends a bearer token.

const ROW_H = 24; // px, keep in sync with --row-h in style.css
const YIELD_EVERY_MS = 16; // give the browser a frame at least this often
const PAINT_EVERY_MS = 100; // redraw figures and table this often while streaming
const LOG_MAX = 400;
const SLICE_BYTES = 64 * 1024; // largest piece of a network read handed to the decoder at once

const EXAMPLES = [
  {
    label: "All events",
    hint: "1M rows · resumable",
    sql: "SELECT * FROM events",
    // A whole table: SQLite counts it fast, so the total can be exact.
    count: "exact",
  },
  {
    label: "Big purchases",
    hint: "WHERE + LIMIT",
    sql: "SELECT id, ts, user_id, city, amount, note\nFROM events\nWHERE kind = 'purchase' AND amount > 300\nLIMIT 20000",
  },
  {
    label: "Revenue by country",
    hint: "aggregate · not resumable",
    sql: "SELECT country, kind, count(*) AS events, round(sum(amount), 2) AS revenue\nFROM events\nGROUP BY country, kind\nORDER BY revenue DESC",
  },
  {
    label: "Purchases with buyers",
    hint: "join · not resumable",
    sql: "SELECT e.id, e.ts, u.name AS buyer, u.plan, p.name AS product, e.amount, e.city\nFROM events e\nJOIN users u ON u.id = e.user_id\nJOIN products p ON p.id = e.product_id\nWHERE e.kind = 'purchase'",
  },
  {
    label: "Beyond 2^53",
    hint: "BigInt",
    sql: "SELECT id, big, typeof(big) AS type, city\nFROM events\nWHERE big > 9007199254740992 OR big < -9007199254740992\nLIMIT 5000",
  },
  {
    label: "A write",
    hint: "refused",
    sql: "DELETE FROM events WHERE id = 1",
  },
];

const HINTS = {
  stream_unsupported_statement:
    "Only a single read-only query can be streamed. The statement was refused before execution: nothing ran.",
  query_error: "The SQL did not prepare. Nothing was executed.",
  bad_request: "The request body was not what the protocol expects.",
  server_stream_capacity_exhausted:
    "The server is at its global cap of concurrent streams. Try again shortly.",
  principal_stream_quota_exhausted:
    "You have too many streams open at once (per-principal cap). Try again shortly.",
  cursor_not_found: "The resume cursor is unknown to the server (or belongs to someone else).",
  cursor_expired: "The cursor outlived its snapshot TTL; run the query again.",
  cursor_cancelled: "The cursor was cancelled; run the query again.",
  prefix_hash_mismatch:
    "The rows held by the client do not match the pinned snapshot, so the server refused to resume.",
  digest_mismatch:
    "The rows received do not hash to the server's end.prefix_hash. Do not trust this result.",
  stream_interrupted:
    "The connection broke and the stream could not be resumed (a query without a cursor must be run again).",
  snapshot_expired: "The pinned snapshot's TTL ran out mid-stream.",
  stream_in_transaction_unsupported: "Streams cannot run inside an open transaction.",
  unauthorized: "This server needs a bearer token: add ?token=... to the page URL.",
  network: "The server could not be reached. Is `scripts/demo.sh` still running?",
};

// ---------------------------------------------------------------- DOM ----

const $ = (id) => document.getElementById(id);
const el = {
  sql: $("sql"),
  examples: $("examples"),
  run: $("run"),
  cancel: $("cancel"),
  pause: $("pause"),
  drop: $("drop"),
  tamper: $("tamper"),
  bigint: $("bigint"),
  keep: $("keep"),
  autodrop: $("autodrop"),
  wasm: $("wasm-status"),
  server: $("server-status"),
  rows: $("stat-rows"),
  bytes: $("stat-bytes"),
  wire: $("stat-wire"),
  ratio: $("stat-ratio"),
  progress: $("progress"),
  progressFill: $("progress-fill"),
  progressText: $("progress-text"),
  rate: $("stat-rate"),
  chunks: $("stat-chunks"),
  elapsed: $("stat-elapsed"),
  ttfr: $("stat-ttfr"),
  badge: $("badge"),
  badgeIcon: $("badge-icon"),
  badgeTitle: $("badge-title"),
  badgeHash: $("badge-hash"),
  badgeNote: $("badge-note"),
  resumable: $("resumable"),
  resume: $("resume"),
  resumeCount: $("resume-count"),
  resumeFrom: $("resume-from"),
  windowNote: $("window-note"),
  follow: $("follow"),
  error: $("error"),
  errorCode: $("error-code"),
  errorStatus: $("error-status"),
  errorMessage: $("error-message"),
  errorHint: $("error-hint"),
  grid: $("grid"),
  gridHead: $("grid-head"),
  gridSpacer: $("grid-spacer"),
  gridRows: $("grid-rows"),
  gridEmpty: $("grid-empty"),
  log: $("log"),
  runs: $("runs"),
};

// ---------------------------------------------------------- formatting ----

const nf = new Intl.NumberFormat("en-US");
const fmtInt = (n) => nf.format(n);

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

function fmtMs(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60_000)}m ${((ms % 60_000) / 1000).toFixed(0)}s`;
}

function fmtRate(r) {
  if (!Number.isFinite(r) || r <= 0) return "–";
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)} M`;
  if (r >= 1e4) return `${(r / 1e3).toFixed(0)} k`;
  return fmtInt(Math.round(r));
}

const short = (hex, n = 12) => (typeof hex === "string" ? `${hex.slice(0, n)}…` : "—");

// ---------------------------------------------------------------- ring ----

/** The last `cap` rows of a stream; memory stays bounded however many arrive. */
class Ring {
  constructor(cap) {
    this.cap = cap;
    this.buf = new Array(cap);
    this.total = 0;
  }
  push(row) {
    this.buf[this.total % this.cap] = row;
    this.total += 1;
  }
  /** Absolute index of the oldest row kept. */
  get first() {
    return Math.max(0, this.total - this.cap);
  }
  get size() {
    return this.total - this.first;
  }
  at(abs) {
    return this.buf[abs % this.cap];
  }
}

// ------------------------------------------------------ running digest ----

const ROW_PREFIX = new TextEncoder().encode('{"row":');

/**
 * The page's own running digest (PROTOCOL.md §2.1): SHA-256 over the bytes of
 * every complete row line, without newlines, across resumes. It is fed the
 * raw body bytes by the fetch tap, so the badge can show a live digest while
 * the package only publishes `summary.prefixHash` at the end; once the
 * package keeps it current, the page stops hashing (see `Run.liveFromPkg`).
 * At the end it doubles as an independent check of the package's verdict.
 */
class TapHasher {
  constructor() {
    this.hasher = new pkg.PrefixHasher();
    this.carry = null;
    this.rows = 0;
    this.scratch = new Uint8Array(1 << 16);
  }

  push(chunk) {
    let buf = chunk;
    if (this.carry !== null) {
      buf = new Uint8Array(this.carry.length + chunk.length);
      buf.set(this.carry, 0);
      buf.set(chunk, this.carry.length);
      this.carry = null;
    }
    if (this.scratch.length < buf.length) this.scratch = new Uint8Array(buf.length * 2);
    const out = this.scratch;
    let len = 0;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      if (isRowLine(buf, start, nl)) {
        out.set(buf.subarray(start, nl), len);
        len += nl - start;
        this.rows += 1;
      }
      start = nl + 1;
    }
    if (start < buf.length) this.carry = buf.slice(start);
    // Row lines are concatenated without separators, so one update per chunk
    // hashes exactly what a line-by-line update would.
    if (len > 0) this.hasher.updateLine(out.subarray(0, len));
  }

  /** The response broke off: a partial last line is not a row anyone holds. */
  cut() {
    this.carry = null;
  }

  hex() {
    return this.hasher.hexDigest();
  }

  free() {
    this.hasher.free();
  }
}

/** A TapHasher, or null when this build of the package has no PrefixHasher. */
function makeTapHasher() {
  try {
    return typeof pkg?.PrefixHasher === "function" ? new TapHasher() : null;
  } catch {
    return null;
  }
}

function isRowLine(buf, start, end) {
  if (end - start < ROW_PREFIX.length) return false;
  for (let i = 0; i < ROW_PREFIX.length; i++) {
    if (buf[start + i] !== ROW_PREFIX[i]) return false;
  }
  return true;
}

// ---------------------------------------------------------------- grid ----

/** A windowed table: only the rows in view exist in the DOM. */
class Grid {
  constructor() {
    this.columns = [];
    this.widthsFixed = false;
    this.pool = [];
    this.follow = true;
    this.lastFirst = 0;
    this.ring = null;
    this.dirty = true;
    // Where render() last put the scroll position itself: the scroll event
    // that follows is not the user's, and must not force a repaint.
    this.autoTop = -1;
    el.grid.addEventListener("scroll", () => {
      const g = el.grid;
      if (g.scrollTop === this.autoTop) return;
      this.follow = g.scrollTop + g.clientHeight >= g.scrollHeight - ROW_H * 1.5;
      this.dirty = true;
      urgentFrame();
    });
    el.follow.addEventListener("click", () => {
      this.follow = true;
      this.dirty = true;
      urgentFrame();
    });
  }

  reset(ring) {
    this.ring = ring;
    this.columns = [];
    this.widthsFixed = false;
    this.follow = true;
    this.lastFirst = 0;
    el.gridHead.replaceChildren();
    el.gridRows.replaceChildren();
    this.pool = [];
    el.gridSpacer.style.height = "0px";
    el.grid.scrollTop = 0;
    el.grid.scrollLeft = 0;
    this.dirty = true;
  }

  setColumns(columns) {
    this.columns = columns;
    const head = [this.#cell("#")];
    for (const c of columns) {
      const s = this.#cell(c.name);
      const t = document.createElement("small");
      t.textContent = shortType(c.type);
      s.append(t);
      s.title = `${c.name} ${c.type || ""}`.trim();
      head.push(s);
    }
    el.gridHead.replaceChildren(...head);
    this.#applyWidths(columns.map(headChars));
  }

  #cell(text) {
    const s = document.createElement("span");
    s.textContent = text;
    return s;
  }

  /** Widths from the header and a sample of rows (chars → px). */
  #applyWidths(chars) {
    const indexCh = 10; // "1,000,000" and a little air
    const px = (ch) => Math.round(Math.min(360, Math.max(56, ch * 7.3 + 22)));
    this.template = [px(indexCh), ...chars.map(px)].map((w) => `${w}px`).join(" ");
    el.gridHead.style.gridTemplateColumns = this.template;
    for (const row of this.pool) row.style.gridTemplateColumns = this.template;
  }

  #fixWidths() {
    const ring = this.ring;
    const n = Math.min(ring.size, 300);
    const chars = this.columns.map(headChars);
    for (let i = 0; i < n; i++) {
      const row = ring.at(ring.first + i);
      for (let j = 0; j < chars.length; j++) {
        const len = display(row?.[j]).text.length;
        if (len > chars[j]) chars[j] = len;
      }
    }
    this.#applyWidths(chars);
    this.widthsFixed = true;
  }

  render() {
    const ring = this.ring;
    if (ring === null || !this.dirty) return;
    this.dirty = false;
    el.gridEmpty.hidden = ring.total > 0 || el.gridHead.childElementCount > 0 || !el.error.hidden;
    if (this.columns.length === 0) return;
    // Column widths come from the first rows (or all of a short result).
    if (!this.widthsFixed && (ring.size >= Math.min(50, ring.cap) || (current === null && ring.size > 0))) {
      this.#fixWidths();
    }

    const g = el.grid;
    const first = ring.first;
    if (!this.follow && first > this.lastFirst) {
      // Old rows left the ring: keep the rows in view where they are.
      g.scrollTop = Math.max(0, g.scrollTop - (first - this.lastFirst) * ROW_H);
      this.autoTop = g.scrollTop;
    }
    this.lastFirst = first;
    el.gridSpacer.style.height = `${ring.size * ROW_H}px`;
    if (this.follow) {
      g.scrollTop = g.scrollHeight;
      this.autoTop = g.scrollTop;
    }

    const viewH = Math.max(0, g.clientHeight - ROW_H);
    const start = Math.min(Math.floor(g.scrollTop / ROW_H), Math.max(0, ring.size - 1));
    const count = Math.min(Math.ceil(viewH / ROW_H) + 2, ring.size - start);
    while (this.pool.length < count) {
      const row = document.createElement("div");
      row.className = "grid-row";
      row.style.gridTemplateColumns = this.template;
      for (let j = 0; j <= this.columns.length; j++) row.append(document.createElement("span"));
      this.pool.push(row);
      el.gridRows.append(row);
    }
    el.gridRows.style.transform = `translateY(${start * ROW_H}px)`;
    for (let i = 0; i < this.pool.length; i++) {
      const rowEl = this.pool[i];
      if (i >= count) {
        rowEl.hidden = true;
        continue;
      }
      rowEl.hidden = false;
      const abs = first + start + i;
      const row = ring.at(abs);
      const cells = rowEl.children;
      cells[0].textContent = fmtInt(abs + 1);
      for (let j = 0; j < this.columns.length; j++) {
        const d = display(row?.[j]);
        const c = cells[j + 1];
        if (c.textContent !== d.text) c.textContent = d.text;
        if (c.className !== d.cls) c.className = d.cls;
        c.title = d.title;
      }
    }
    el.follow.hidden = this.follow || current === null;
  }
}

const TYPE_ABBREV = { INTEGER: "int", TEXT: "text", REAL: "real", BLOB: "blob", NUMERIC: "num" };

/** The declared type as a short header label ("" for expressions). */
function shortType(type) {
  const t = (type || "").toUpperCase();
  return TYPE_ABBREV[t] ?? t.toLowerCase().slice(0, 8);
}

/** Header width in characters (the type label is set smaller). */
function headChars(c) {
  const t = shortType(c.type).length;
  const head = c.name.length + (t > 0 ? Math.ceil(t * 0.8) + 1 : 0);
  // Integer columns grow as the stream goes on (ids): leave room for 7 digits.
  return /INT/i.test(c.type || "") ? Math.max(head, 8) : head;
}

/** How a value shows in a cell: text, class, tooltip. */
function display(v) {
  if (v === null || v === undefined) return { text: "NULL", cls: "cell-null", title: "" };
  switch (typeof v) {
    case "bigint":
      return { text: v.toString(), cls: "cell-num cell-big", title: "exact 64-bit integer (BigInt)" };
    case "number":
      if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
        return {
          text: String(v),
          cls: "cell-num cell-rounded",
          title: "rounded to the nearest double: turn on “exact BigInt” to see the real value",
        };
      }
      return { text: String(v), cls: "cell-num", title: "" };
    case "string": {
      const text = v.replace(/\n/g, "⏎").replace(/\t/g, "⇥");
      return { text, cls: "", title: v.length > 24 ? v : "" };
    }
    default: {
      const text = JSON.stringify(v, (_, x) => (typeof x === "bigint" ? x.toString() : x));
      return { text, cls: "", title: text };
    }
  }
}

// ------------------------------------------------------------ the page ----

let pkg = null;
let current = null; // the running Run, if any
let runSeq = 0;
let frameQueued = false;
let paintUrgent = false;
let lastPaint = -Infinity;
const serverIgnores = new Set(); // options a PROTOCOL 1.0 server refused
const grid = new Grid();
const history = [];

const params = new URLSearchParams(location.search);
const serverBase = params.get("server") ?? location.origin;
const endpoint = new URL("/v1/query/stream", serverBase).href;
const token = params.get("token") ?? undefined;

el.server.textContent = `server: ${new URL(endpoint).host}`;
el.server.title = `POST ${endpoint}`;

/**
 * The page repaints from one animation-frame loop. While rows stream in, the
 * figures and the table are redrawn at most every PAINT_EVERY_MS: a repaint
 * per frame (the table scrolls every frame) cost more than the stream itself
 * in headless Chromium (software raster). Scrolling, resizing and the end
 * of a run repaint at the next frame (`urgentFrame`).
 */
function requestFrame() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame((now) => {
    frameQueued = false;
    if (current === null || paintUrgent || now - lastPaint >= PAINT_EVERY_MS) {
      paintUrgent = false;
      lastPaint = now;
      refresh();
    }
    if (current !== null) requestFrame();
  });
}

function urgentFrame() {
  paintUrgent = true;
  requestFrame();
}

// -------------------------------------------------------------- logging ----

let logEpoch = performance.now();

function log(kind, message, { sep = false } = {}) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  if (sep) li.className = "sep";
  const t = document.createElement("span");
  t.className = "t";
  t.textContent = `${((performance.now() - logEpoch) / 1000).toFixed(3)}s`;
  const m = document.createElement("span");
  m.className = "m";
  m.textContent = message;
  li.append(t, m);
  el.log.append(li);
  while (el.log.childElementCount > LOG_MAX) el.log.firstElementChild.remove();
  el.log.scrollTop = el.log.scrollHeight;
}

// ------------------------------------------------------------ fetch tap ----

/**
 * The `fetch` handed to streamQuery: logs every request, reads the `open`
 * line of each response for the log, and wraps the body so the page can
 * cut it mid-stream ("Drop connection") exactly as a broken network would.
 */
function tapFetch(run) {
  return async (input, init) => {
    const url = String(input);
    const path = new URL(url).pathname;
    let req = {};
    try {
      req = JSON.parse(init?.body ?? "{}");
    } catch {
      req = {};
    }
    const isCancel = path.endsWith("/cancel");
    if (isCancel) log("req", `POST ${path} · cursor ${short(req.cursor)}`);
    else if (req.cursor !== undefined) {
      log("req", `POST ${path} · resume after_rows=${fmtInt(req.after_rows)} prefix_hash=${short(req.prefix_hash, 10)}`);
    } else log("req", `POST ${path} · fresh query`);

    let res;
    try {
      res = await fetch(input, init);
    } catch (e) {
      if (!run.ctl.signal.aborted) log("bad", `request failed: ${e.message}`);
      throw e;
    }
    if (isCancel) {
      log(res.ok ? "ok" : "bad", `cancel → ${res.status}${res.ok ? " (cursor tombstoned, stream stopped)" : ""}`);
      return res;
    }
    if (!res.ok) {
      let code = "";
      try {
        code = JSON.parse(await res.clone().text())?.error?.code ?? "";
      } catch {
        code = "";
      }
      log("bad", `→ ${res.status} ${code}`.trim());
      return res;
    }
    if (res.body === null) return res;
    run.responses += 1;
    run.encoding = res.headers.get("content-encoding") ?? "identity";

    const reader = res.body.getReader();
    const utf8 = new TextDecoder();
    let head = "";
    let headDone = false;
    let dropped = false;
    let controller = null;
    const onHead = (bytes) => {
      head += utf8.decode(bytes, { stream: true });
      const nl = head.indexOf("\n");
      if (nl < 0 && head.length < 65536) return;
      headDone = true;
      try {
        const open = JSON.parse(head.slice(0, nl < 0 ? head.length : nl)).open;
        if (open) logOpen(run, open);
      } catch {
        // The package reports malformed lines itself.
      }
      head = "";
    };
    // Network reads can be megabytes; handing them to the package in slices
    // keeps every decode step short, so the page never stalls for long.
    let pending = null;
    let pendingAt = 0;
    const body = new ReadableStream(
      {
        start(c) {
          controller = c;
        },
        async pull(c) {
          if (pending !== null) {
            const slice = pending.subarray(pendingAt, pendingAt + SLICE_BYTES);
            pendingAt += slice.length;
            if (pendingAt >= pending.length) pending = null;
            const out = run.tamperNext ? tamper(run, slice) : slice;
            run.tap?.push(out);
            c.enqueue(out);
            return;
          }
          let r;
          try {
            r = await reader.read();
          } catch (e) {
            if (!dropped) {
              if (!run.ctl.signal.aborted) log("warn", `connection broke: ${e.message}`);
              run.tap?.cut();
              c.error(e);
            }
            return;
          }
          if (dropped) return;
          if (r.done) {
            run.tap?.cut();
            c.close();
            return;
          }
          if (!headDone) onHead(r.value);
          run.netReads += 1;
          let chunk = r.value;
          if (chunk.length > SLICE_BYTES) {
            pending = chunk;
            pendingAt = SLICE_BYTES;
            chunk = chunk.subarray(0, SLICE_BYTES);
          }
          if (run.tamperNext) chunk = tamper(run, chunk);
          run.tap?.push(chunk);
          c.enqueue(chunk);
        },
        cancel(reason) {
          return reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
    run.dropCurrent = () => {
      if (dropped) return false;
      dropped = true;
      pending = null;
      run.tap?.cut();
      try {
        controller.error(new TypeError("connection dropped by the demo page"));
      } catch {
        // Already closed or errored.
      }
      reader.cancel("dropped").catch(() => {});
      return true;
    };
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

const ROW_ARRAY_PREFIX = new TextEncoder().encode('{"row":[');

/**
 * "Tamper": changes the first digit of the first row in `chunk` that starts
 * with a number (a copy; the JSON stays valid), as a corrupting proxy would.
 * The package must then end the stream with `digest_mismatch`.
 */
function tamper(run, chunk) {
  const p = ROW_ARRAY_PREFIX;
  for (let i = chunk.indexOf(p[0]); i >= 0 && i + p.length < chunk.length; i = chunk.indexOf(p[0], i + 1)) {
    let k = 0;
    while (k < p.length && chunk[i + k] === p[k]) k++;
    if (k < p.length) continue;
    const at = i + p.length;
    const d = chunk[at];
    if (d < 0x31 || d > 0x39) continue; // '1'..'9' (a lone 0 could not change length-safely)
    const out = chunk.slice();
    out[at] = d === 0x39 ? 0x38 : d + 1;
    run.tamperNext = false;
    log("bad", `✎ tampered: changed ${String.fromCharCode(d)} → ${String.fromCharCode(out[at])} in a row in transit`);
    return out;
  }
  return chunk;
}

function logOpen(run, open) {
  const ttl = Math.max(0, Math.round((open.expires_at_ms - Date.now()) / 1000));
  const parts = [
    `open · lease ${short(open.lease, 8)}`,
    `snapshot_lsn ${open.snapshot_lsn}`,
    open.resumable ? `resumable, cursor ${short(open.cursor, 8)}, ttl ${ttl}s` : `not resumable (${open.reason ?? "?"})`,
  ];
  if (open.after_rows > 0) parts.push(`after_rows ${fmtInt(open.after_rows)}`);
  else parts.push(`${open.columns.length} columns`);
  log(open.resumable ? "info" : "warn", parts.join(" · "));
  run.opens += 1;
}

// ------------------------------------------------------------------ run ----

/**
 * `count` for a query: "exact" where the demo knows the count is cheap (a
 * whole table: the examples say so), "estimated" otherwise (the server's
 * planner; it may not know: then the bar has no total).
 */
function countFor(sql) {
  const known = EXAMPLES.find((e) => e.sql.trim() === sql);
  return known?.count ?? "estimated";
}

const EMPTY_SUMMARY = Object.freeze({
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
  totalRows: null,
  totalRowsExact: false,
  wireBytes: undefined,
});

class Run {
  constructor(sql) {
    this.id = ++runSeq;
    this.sql = sql;
    this.ctl = new AbortController();
    this.ring = new Ring(Number(el.keep.value) || 100_000);
    this.summary = EMPTY_SUMMARY;
    this.status = "running";
    this.error = null;
    this.t0 = performance.now();
    this.tEnd = null;
    this.tFirst = null;
    this.samples = [];
    this.responses = 0;
    this.netReads = 0; // body reads from the network, across responses
    this.opens = 0;
    this.dropCurrent = null;
    this.paused = false;
    this.unpause = null;
    this.autoDropAt = Number(el.autodrop.value) || 0;
    this.autoDropped = false;
    this.cancelledByUser = false;
    this.tamperNext = false;
    this.done = null;
    this.tap = makeTapHasher();
    this.tapHash = null; // the page's digest when the stream ended
    this.liveFromPkg = false; // the package keeps summary.prefixHash current
    this.encoding = null; // Content-Encoding of the last response
    this.count = countFor(sql);
  }

  get rows() {
    return this.summary?.rowCount ?? 0;
  }
}

function setRunning(running) {
  el.run.disabled = false;
  el.cancel.disabled = !running;
  el.pause.disabled = !running;
  el.drop.disabled = !running;
  el.tamper.disabled = !running;
  el.pause.setAttribute("aria-pressed", "false");
  el.pause.innerHTML = '<span aria-hidden="true">❚❚</span> Pause';
}

function yieldToBrowser() {
  if (globalThis.scheduler?.yield) return globalThis.scheduler.yield();
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function startRun() {
  if (pkg === null) return;
  const sql = el.sql.value.trim();
  if (sql === "") return;
  if (current !== null) {
    const prev = current;
    cancelRun("superseded");
    await prev.done;
  }
  const run = new Run(sql);
  current = run;
  let finish;
  run.done = new Promise((resolve) => (finish = resolve));
  hideError();
  grid.reset(run.ring);
  setRunning(true);
  document.body.dataset.state = "running";
  log("info", `run #${run.id}: ${sql.replace(/\s+/g, " ").slice(0, 90)}`, { sep: true });

  let it = null;
  let columnsShown = false;
  let lastYield = performance.now();
  try {
    const stream = pkg.streamQuery(endpoint, {
      query: sql,
      shape: "array",
      bigint: el.bigint.checked,
      token,
      signal: run.ctl.signal,
      fetch: tapFetch(run),
      maxRetries: 5,
      backoffMs: 200,
      // Not asked again once the server said it does not know them (1.0).
      ...(serverIgnores.has("count") ? {} : { count: run.count }),
      // Progress lines keep the bar moving when rows are slow; heartbeats
      // (every 15 s by default) keep a 45 s idle timeout from firing on a
      // slow but healthy query.
      ...(serverIgnores.has("progressMs") ? {} : { progressMs: 250 }),
      idleTimeoutMs: 45_000,
    });
    run.summary = stream.summary;
    requestFrame();
    it = stream[Symbol.asyncIterator]();
    for (let n = 1; ; n++) {
      const r = await it.next();
      if (r.done) break;
      if (run.tFirst === null) run.tFirst = performance.now();
      run.ring.push(r.value);
      if (run.tap !== null && run.summary.prefixHash !== null && run.summary.endReason === null) {
        // The package publishes the running digest itself: stop hashing twice.
        run.liveFromPkg = true;
        run.tap.free();
        run.tap = null;
      }
      if (!columnsShown && run.summary.columns.length > 0) {
        grid.setColumns(run.summary.columns);
        columnsShown = true;
      }
      if (run.autoDropAt > 0 && !run.autoDropped && run.summary.rowCount >= run.autoDropAt) {
        run.autoDropped = true;
        dropConnection("auto-drop");
      }
      if ((n & 255) === 0) {
        grid.dirty = true;
        const now = performance.now();
        if (now - lastYield > YIELD_EVERY_MS || run.paused) {
          if (run.paused) await new Promise((resolve) => (run.unpause = resolve));
          await yieldToBrowser();
          lastYield = performance.now();
        }
      }
    }
    if (!columnsShown && run.summary.columns.length > 0) grid.setColumns(run.summary.columns);
    for (const o of run.summary.ignoredOptions ?? []) {
      if (!serverIgnores.has(o)) log("warn", `the server does not know ${o} (PROTOCOL 1.0): asked again without it`);
      serverIgnores.add(o);
    }
    run.status = run.summary.verified ? "verified" : "failed";
    const s = run.summary;
    log(
      "ok",
      `end · ${s.endReason ?? "?"} · row_count ${fmtInt(s.rowCount)} · prefix_hash ${short(s.prefixHash, 16)} ✓ verified`,
    );
    if (run.tap !== null) {
      run.tapHash = run.tap.hex();
      if (run.tapHash === s.prefixHash && run.tap.rows === s.rowCount) {
        log("ok", `the page's own digest of the raw bytes agrees (${fmtInt(run.tap.rows)} row lines)`);
      } else {
        log("bad", `the page's own digest differs: ${short(run.tapHash, 16)} over ${fmtInt(run.tap.rows)} row lines`);
      }
    }
  } catch (e) {
    run.error = e;
    const code = errorCode(e);
    if (run.cancelledByUser || code === "cancelled") {
      run.status = "stopped";
      log("warn", `cancelled at row ${fmtInt(run.rows)}`);
    } else {
      run.status = "failed";
      log("bad", `error · ${code}: ${e?.message ?? e}`);
      showError(e);
    }
    try {
      await it?.return?.();
    } catch {
      // Already finished.
    }
  } finally {
    run.tEnd = performance.now();
    run.dropCurrent = null;
    if (run.tap !== null) {
      if (run.tapHash === null) run.tapHash = run.tap.hex();
      run.tap.free();
      run.tap = null;
    }
    if (current === run) current = null;
    document.body.dataset.state = run.status;
    if (!grid.widthsFixed && grid.columns.length === 0 && run.summary.columns.length > 0) {
      grid.setColumns(run.summary.columns);
    }
    grid.dirty = true;
    setRunning(current !== null);
    refresh(run);
    addHistory(run);
    finish();
  }
}

function cancelRun(why = "cancelled by you") {
  const run = current;
  if (run === null) return;
  run.cancelledByUser = true;
  log("warn", `${why === "superseded" ? "stopping the previous run" : "cancel"} at row ${fmtInt(run.rows)}`);
  run.ctl.abort(new pkg.RowstreamError("cancelled", why));
  if (run.unpause) {
    run.paused = false;
    run.unpause();
    run.unpause = null;
  }
}

function dropConnection(how = "you") {
  const run = current;
  if (run === null || run.dropCurrent === null) return;
  if (run.dropCurrent()) {
    log("warn", `✂ connection dropped by ${how} at row ${fmtInt(run.rows)}`);
    requestFrame();
  }
}

function togglePause() {
  const run = current;
  if (run === null) return;
  run.paused = !run.paused;
  el.pause.setAttribute("aria-pressed", String(run.paused));
  el.pause.innerHTML = run.paused
    ? '<span aria-hidden="true">▶</span> Resume reading'
    : '<span aria-hidden="true">❚❚</span> Pause';
  log("info", run.paused ? "paused reading: backpressure now holds the server back" : "reading again");
  if (!run.paused && run.unpause) {
    run.unpause();
    run.unpause = null;
  }
}

// --------------------------------------------------------------- errors ----

function errorCode(e) {
  if (e && typeof e.code === "string") return e.code;
  if (e instanceof TypeError) return "network";
  if (e?.name === "AbortError") return "cancelled";
  return "error";
}

function showError(e) {
  const code = errorCode(e);
  el.errorCode.textContent = code;
  const bits = [];
  if (e?.status !== undefined) bits.push(`HTTP ${e.status}`);
  if (e?.details) {
    for (const [k, v] of Object.entries(e.details)) {
      if (v !== undefined && v !== null) bits.push(`${k}: ${v}`);
    }
  }
  if (e?.retryAfterMs !== undefined) bits.push(`retry after ${fmtMs(e.retryAfterMs)}`);
  el.errorStatus.textContent = bits.join(" · ");
  el.errorMessage.textContent = e?.message ?? String(e);
  el.errorHint.textContent = HINTS[code] ?? "";
  el.error.hidden = false;
}

function hideError() {
  el.error.hidden = true;
}

// -------------------------------------------------------------- figures ----

function refresh(run = current ?? history.at(-1)?.run ?? null) {
  grid.render();
  if (run === null || run.summary === null) return;
  const s = run.summary;
  const now = run.tEnd ?? performance.now();
  const elapsed = now - run.t0;

  setStat(el.rows, s.rowCount, fmtInt(s.rowCount));
  setStat(el.bytes, s.bytes, fmtBytes(s.bytes));
  const wire = s.wireBytes;
  setStat(el.wire, wire ?? "", wire === undefined ? (run.status === "running" ? "at the end" : "–") : fmtBytes(wire));
  const coding = run.encoding ?? "";
  const ratio = wire !== undefined && wire > 0 ? s.bytes / wire : null;
  el.ratio.dataset.encoding = coding;
  setStat(
    el.ratio,
    ratio === null ? "" : ratio.toFixed(2),
    ratio === null ? (coding === "" ? "–" : coding) : `${ratio.toFixed(1)}× ${coding}`,
  );
  refreshProgress(run, s);
  setStat(el.chunks, run.netReads, fmtInt(run.netReads));
  setStat(el.elapsed, Math.round(elapsed), fmtMs(elapsed));
  const ttfr = run.tFirst === null ? null : run.tFirst - run.t0;
  setStat(el.ttfr, ttfr === null ? "" : Math.round(ttfr), ttfr === null ? "–" : fmtMs(ttfr));

  let rate;
  if (run.tEnd !== null) {
    rate = elapsed > 0 ? (s.rowCount / elapsed) * 1000 : 0;
  } else {
    run.samples.push([now, s.rowCount]);
    while (run.samples.length > 2 && now - run.samples[0][0] > 1000) run.samples.shift();
    const [t0, r0] = run.samples[0];
    rate = now > t0 ? ((s.rowCount - r0) / (now - t0)) * 1000 : 0;
  }
  setStat(el.rate, Math.round(rate), fmtRate(rate));
  el.rate.title = run.tEnd !== null ? "average over the whole run" : "over the last second";

  // Resumability tag.
  if (s.resumable === null) {
    el.resumable.hidden = true;
  } else {
    el.resumable.hidden = false;
    el.resumable.dataset.resumable = String(s.resumable);
    el.resumable.dataset.reason = s.reason ?? "";
    el.resumable.textContent = s.resumable ? "resumable" : `not resumable: ${s.reason ?? "?"}`;
    el.resumable.title = s.resumable
      ? `cursor ${s.cursor}`
      : "the server gave no cursor: a dropped connection cannot be resumed";
  }

  // Resumes.
  el.resume.dataset.count = String(s.resumes);
  el.resumeCount.textContent = String(s.resumes);
  el.resumeFrom.textContent =
    s.resumedFrom.length === 0
      ? ""
      : `from after_rows ${s.resumedFrom.map(fmtInt).join(", ")}`;

  // Verification badge.
  let state;
  let title;
  let icon;
  let note;
  const hash = s.prefixHash;
  if (run.status === "running") {
    state = "running";
    icon = "◌";
    title = run.paused ? "paused (backpressure)" : s.resumes > 0 ? "streaming · resumed" : "streaming · verifying";
    note = "running digest of the rows received so far; checked against the server’s end line";
  } else if (run.status === "verified") {
    state = "verified";
    icon = "✓";
    title = `verified · ${fmtInt(s.rowCount)} rows`;
    note =
      s.resumes > 0
        ? `resumed ${s.resumes}× and still equal to the server’s end.prefix_hash over all ${fmtInt(s.rowCount)} rows`
        : `equal to the server’s end.prefix_hash over all ${fmtInt(s.rowCount)} rows`;
  } else if (run.status === "stopped") {
    state = "stopped";
    icon = "■";
    title = "cancelled · not verified";
    note = `digest of the ${fmtInt(s.rowCount)} rows received before the cancel; no end line, so nothing to verify against`;
  } else {
    state = "failed";
    icon = "✗";
    const code = errorCode(run.error);
    if (code === "digest_mismatch") {
      title = "digest mismatch";
      note = "the rows received do not hash to the server’s end.prefix_hash: do not trust them";
    } else if (s.resumable === null) {
      title = run.error?.status ? `refused (HTTP ${run.error.status})` : "no stream";
      note = `${code}: no row was sent, nothing to verify`;
    } else {
      title = "not verified";
      note = `${code}: the stream stopped after ${fmtInt(s.rowCount)} rows without a verified end line`;
    }
  }
  el.badge.dataset.state = state;
  el.badge.dataset.code = run.error ? errorCode(run.error) : "";
  el.badgeIcon.textContent = icon;
  el.badgeTitle.textContent = title;
  let shown = hash;
  if (run.status === "running" && !run.liveFromPkg) {
    // Between frames, at most a few times a second: hexDigest() finalizes a copy.
    const now = performance.now();
    if (run.tap !== null && (run.tapShownAt === undefined || now - run.tapShownAt > 150)) {
      run.tapShownAt = now;
      run.tapShown = run.tap.hex();
    }
    shown = run.tapShown ?? null;
  } else if (shown === null) {
    shown = run.tapHash;
  }
  el.badgeHash.textContent =
    s.resumable === null && run.status !== "running"
      ? "—"
      : (shown ?? (run.status === "running" ? "hashing…" : "—"));
  el.badgeNote.textContent = note;

  // Window note.
  const ring = run.ring;
  if (ring.total === 0) {
    el.windowNote.textContent = run.status === "running" ? "waiting for the first row…" : "no rows";
  } else if (ring.first > 0) {
    el.windowNote.textContent = `${fmtInt(ring.size)} most recent rows kept (rows ${fmtInt(ring.first + 1)}–${fmtInt(ring.total)}); older rows were dropped from memory`;
  } else {
    el.windowNote.textContent = `${fmtInt(ring.total)} rows`;
  }
}

function refreshProgress(run, s) {
  const total = s.totalRows;
  const state = run.status === "running" ? (total === null ? "unknown" : "running") : run.status;
  if (el.progress.dataset.state !== state) el.progress.dataset.state = state;
  let text;
  let pct;
  if (total === null) {
    pct = run.status === "verified" ? 100 : 0;
    text = run.status === "running" ? `${fmtInt(s.rowCount)} · total unknown` : `${fmtInt(s.rowCount)} rows`;
  } else {
    pct = run.status === "verified" ? 100 : total > 0 ? Math.min(100, (s.rowCount / total) * 100) : 0;
    text = `${fmtInt(s.rowCount)} / ${s.totalRowsExact ? "" : "≈ "}${fmtInt(total)} · ${Math.floor(pct)}%`;
  }
  el.progress.dataset.total = total === null ? "" : String(total);
  el.progress.dataset.exact = String(s.totalRowsExact === true);
  const width = `${pct.toFixed(1)}%`;
  if (el.progressFill.style.width !== width) el.progressFill.style.width = width;
  if (el.progressText.textContent !== text) el.progressText.textContent = text;
}

function setStat(node, raw, text) {
  const v = String(raw);
  if (node.dataset.value !== v) node.dataset.value = v;
  if (node.textContent !== text) node.textContent = text;
}

// -------------------------------------------------------------- history ----

function addHistory(run) {
  const s = run.summary;
  const entry = { run, sql: run.sql, rows: s.rowCount, hash: s.prefixHash, status: run.status };
  const same =
    run.status === "verified"
      ? history.find((h) => h.status === "verified" && h.sql === run.sql && h.hash === s.prefixHash)
      : undefined;
  history.push(entry);
  if (history.length > 50) history.shift();

  const tr = document.createElement("tr");
  tr.dataset.status = run.status;
  tr.dataset.hash = s.prefixHash ?? "";
  tr.dataset.rows = String(s.rowCount);
  tr.dataset.resumes = String(s.resumes);
  const td = (text, cls) => {
    const c = document.createElement("td");
    c.textContent = text;
    if (cls) c.className = cls;
    return c;
  };
  const q = td(run.sql.replace(/\s+/g, " "));
  q.title = run.sql;
  const digest = document.createElement("td");
  if (run.status === "verified") {
    const code = document.createElement("code");
    code.textContent = s.prefixHash.slice(0, 8);
    code.title = s.prefixHash;
    digest.append(code);
    if (same) {
      const m = document.createElement("span");
      m.className = "same";
      m.textContent = ` =#${same.run.id}`;
      m.title = `same rows and digest as run #${same.run.id}`;
      digest.append(m);
    }
  } else {
    digest.textContent = run.status === "stopped" ? "cancelled" : errorCode(run.error);
    digest.title = run.error?.message ?? "";
  }
  tr.append(td(String(run.id)), q, td(fmtInt(s.rowCount), "num"), td(String(s.resumes), "num"), digest);
  el.runs.prepend(tr);
  while (el.runs.childElementCount > 30) el.runs.lastElementChild.remove();
}

// ------------------------------------------------------------- examples ----

function selectExample(i) {
  el.sql.value = EXAMPLES[i].sql;
  for (const [j, b] of [...el.examples.children].entries()) {
    b.setAttribute("aria-pressed", String(j === i));
  }
}

for (const [i, ex] of EXAMPLES.entries()) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "chip";
  b.dataset.example = String(i);
  b.setAttribute("aria-pressed", "false");
  b.textContent = ex.label;
  const h = document.createElement("span");
  h.className = "hint";
  h.textContent = ex.hint;
  b.append(h);
  b.addEventListener("click", () => selectExample(i));
  el.examples.append(b);
}
selectExample(0);
el.sql.addEventListener("input", () => {
  for (const b of el.examples.children) {
    b.setAttribute("aria-pressed", String(EXAMPLES[Number(b.dataset.example)].sql === el.sql.value));
  }
});

// -------------------------------------------------------------- wiring ----

el.run.addEventListener("click", () => startRun());
el.cancel.addEventListener("click", () => cancelRun());
el.drop.addEventListener("click", () => dropConnection());
el.pause.addEventListener("click", () => togglePause());
el.tamper.addEventListener("click", () => {
  if (current === null) return;
  current.tamperNext = true;
  log("warn", "tampering with the next row in transit…");
});
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
    e.preventDefault();
    startRun();
  } else if (e.key === "Escape" && current !== null) {
    cancelRun();
  }
});
window.addEventListener("resize", () => {
  grid.dirty = true;
  urgentFrame();
});

document.body.dataset.state = "loading";
el.run.disabled = true;
setRunning(false);
el.run.disabled = true;

try {
  pkg = await import(new URL("./pkg/index.js", import.meta.url).href);
  await pkg.default();
  el.wasm.dataset.state = "ready";
  el.wasm.textContent = "wasm: ready";
  el.run.disabled = false;
  document.body.dataset.state = "idle";
  logEpoch = performance.now();
  log("info", `ready · streaming from ${endpoint}`);
} catch (e) {
  el.wasm.dataset.state = "error";
  el.wasm.textContent = "wasm: missing";
  document.body.dataset.state = "error";
  showError(
    Object.assign(new Error(`could not load the rowstream package from ./pkg/ (${e?.message ?? e})`), {
      code: "package_missing",
    }),
  );
  el.errorHint.textContent = "Run scripts/demo.sh: it builds the package and copies it to www/pkg/.";
}
