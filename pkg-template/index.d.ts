import type { Column, EndFrame } from "./rowstream.js";
import type { ExactJsonValue } from "./exact-json.js";

export {
  NdjsonFramer,
  PrefixHasher,
  ChunkProducer,
  StreamDecoder,
  CursorRegistry,
  assessResumability,
  parseJwtExpMs,
} from "./rowstream.js";
export type {
  Uint64,
  FramerOptions,
  StreamDecoderOptions,
  CodedError,
  Column,
  OpenFrame,
  EndFrame,
  ErrorBody,
  DecodedBatch,
  ResumeRequest,
  ProducerOptions,
  FlushReason,
  ProducerTotals,
  CursorRegistryOptions,
  CursorScope,
  NewCursor,
  CursorInfo,
  CursorStats,
  AssessOptions,
  Resumability,
} from "./rowstream.js";
export { parseExact } from "./exact-json.js";
export type { ExactJsonValue } from "./exact-json.js";

declare global {
  interface SymbolConstructor {
    /**
     * The classes wasm-bindgen generates (`rowstream.js`) declare
     * `[Symbol.dispose]()` (an alias of `free()`, set where the runtime has
     * the symbol: Node 20+, current browsers). Declared here, as
     * `@types/node` does, so projects whose `lib` stops at ES2022 type-check
     * without `skipLibCheck`; identical to `lib.esnext.disposable`'s.
     */
    readonly dispose: unique symbol;
  }
}

/** A plain JSON value (what rows hold without `bigint: true`). */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/** Where `init` may load the WebAssembly module from. */
export type InitInput =
  | BufferSource
  | WebAssembly.Module
  | URL
  | string
  | Response
  | PromiseLike<Response>;

/**
 * Loads the WebAssembly module (once; later calls return the same promise).
 * Browsers fetch `rowstream_bg.wasm` next to the module; Node reads it from disk.
 */
export default function init(input?: InitInput): Promise<void>;

/** Synchronous init from the module's bytes or a compiled module. */
export function initSync(module: BufferSource | WebAssembly.Module): void;

/** Stable codes of client-side errors; server errors carry the server's code. */
export type ClientErrorCode =
  | "digest_mismatch"
  | "stream_interrupted"
  | "protocol_error"
  | "malformed_line"
  | "line_too_long"
  | "invalid_utf8"
  | "cancelled"
  | "snapshot_expired"
  | "stream_error"
  | "already_iterated"
  | "not_initialized"
  | "invalid_row"
  | "ingest_interrupted"
  | "invalid_argument"
  | "stream_idle_timeout";

/** Every error of the streaming client. */
export class RowstreamError extends Error {
  constructor(
    code: string,
    message: string,
    options?: {
      cause?: unknown;
      status?: number;
      details?: Record<string, unknown>;
      retryAfterMs?: number;
    },
  );
  readonly name: "RowstreamError";
  /** `ClientErrorCode`, or the server's code (e.g. `cursor_expired`). */
  readonly code: ClientErrorCode | (string & {});
  /** HTTP status, when the server refused a request. */
  readonly status?: number;
  /** The server's extra fields (`limit`, `current`, ...) or the offending `line`. */
  readonly details?: Record<string, unknown>;
  /** From `Retry-After`, when the server sent one. */
  readonly retryAfterMs?: number;
}

export interface StreamQueryOptions {
  /** The SQL (a single read-only statement). */
  query: string;
  /** Positional or named parameters. */
  params?: readonly ExactJsonValue[] | { readonly [name: string]: ExactJsonValue };
  /** `"object"` (default): rows are objects; `"array"`: arrays ordered as `summary.columns`. */
  shape?: "object" | "array";
  /** Bearer token, or a function returning one (called before every request, so it can refresh). */
  token?: string | (() => string | Promise<string>);
  /** Aborting stops reading and cancels the server cursor; the iteration rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Integers beyond 2^53 become exact `bigint`s instead of rounded numbers. */
  bigint?: boolean;
  /** Consecutive failed attempts without a new row before giving up (default 5). */
  maxRetries?: number;
  /** Base of the exponential backoff between attempts, in ms (default 250). */
  backoffMs?: number;
  /** Longest accepted line (default 16 MiB). */
  maxLineBytes?: number;
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /**
   * Where the row lines' SHA-256 is computed. `"auto"` (default): the
   * runtime's native `node:crypto` when it is reachable synchronously
   * (`process.getBuiltinModule`, Node ≥ 20.16 / 22.3), else WebAssembly
   * (browsers). `"native"` requires `node:crypto` (a `TypeError` otherwise);
   * `"wasm"` always hashes in WebAssembly. The verification is the same.
   */
  hash?: "auto" | "native" | "wasm";
  /**
   * (PROTOCOL 1.1) Ask for the result's size in the `open` line:
   * `"exact"` counts it in the stream's snapshot before the first row (a
   * scan), `"estimated"` asks the planner (may be wrong, or unknown).
   * `"none"` (default) asks nothing. Read it in `summary.totalRows`. A 1.0
   * server refuses the field: the request is sent again without it
   * (`summary.ignoredOptions`).
   */
  count?: "none" | "estimated" | "exact";
  /**
   * (PROTOCOL 1.1) Ask the server for a progress line at most this often
   * (ms; it clamps it to its `stream.progress.min_ms`); `onProgress` is then
   * called from those lines. Dropped as `count` is for a 1.0 server.
   */
  progressMs?: number;
  /**
   * Called from the server's progress lines (with `progressMs`); otherwise
   * once per network chunk (at most every `progressMs` if it was given and
   * the response sends none). A throw from it ends the iteration with it.
   */
  onProgress?: (progress: StreamProgress) => void;
  /**
   * Take the connection as dropped (and resume, as after any drop) when no
   * byte arrived for this long, waiting for the response or for its body
   * (ms; default: never). Set it above the server's `stream.heartbeat_ms`
   * (default 15000), e.g. 3×: a 1.1 server sends a heartbeat line after
   * that much silence, so only a dead or stuck connection is cut. Also
   * frees a fetch that never settles a broken compressed body (Node 20).
   */
  idleTimeoutMs?: number;
}

/** What `onProgress` receives. */
export interface StreamProgress {
  /** Rows from row 0 of the result (the server's count of rows sent, or the rows received). */
  rows: number;
  /** Decoded body bytes across responses (the server's, before compression, or the bytes received). */
  bytes: number;
  /** `summary.totalRows` at that point. */
  totalRows: number | null;
  /** `summary.totalRowsExact` at that point. */
  totalRowsExact: boolean;
  /** Since the iteration started, by the client's clock. */
  elapsedMs: number;
  /** `"server"`: from a progress line; `"client"`: the client's own figures for a network chunk. */
  source: "server" | "client";
}

/** Live: updated as chunks arrive, final once the iteration ends. */
export interface StreamSummary {
  /** Rows received, from row 0, across resumes. */
  rowCount: number;
  /** The running digest of the rows received so far (null before the first row); the server's once verified. */
  prefixHash: string | null;
  /** True once the server's `end` line matched every row received. */
  verified: boolean;
  /** Resume attempts made. */
  resumes: number;
  /** Body bytes received, across responses (decoded: after Content-Encoding). */
  bytes: number;
  /**
   * Body bytes as they crossed the network (compressed), across responses,
   * once the stream has ended verified, where the runtime tells them:
   * browsers, from the `encodedBodySize` of each response's
   * PerformanceResourceTiming entry (same-origin or `Timing-Allow-Origin`;
   * a response cut off mid-stream may have no entry). Undefined otherwise,
   * e.g. in Node, whose `fetch` hands over decoded bodies and records no
   * entry.
   */
  wireBytes: number | undefined;
  /** (1.1) The `open` line's `total_rows` (with `count`); null when not asked for or unknown. */
  totalRows: number | null;
  /** (1.1) Whether `totalRows` is an exact count (false for estimates and for null). */
  totalRowsExact: boolean;
  /** Options the server did not know (a PROTOCOL 1.0 server): `"count"`, `"progressMs"`. */
  ignoredOptions: ("count" | "progressMs")[];
  /** Body chunks read, across responses. */
  chunks: number;
  columns: Column[];
  /** `after_rows` of every resume attempt, in order. */
  resumedFrom: number[];
  /** Whether the server issued a cursor (null before the open line). */
  resumable: boolean | null;
  /** Why the query is not resumable (the server's code). */
  reason: string | null;
  cursor: string | null;
  endReason: EndFrame["reason"] | null;
  /** Where the row lines are hashed (see `StreamQueryOptions.hash`); null before the iteration starts. */
  hash: "native" | "wasm" | null;
}

/** An async iterable of rows; iterate it once. */
export interface RowStream<Row> extends AsyncIterable<Row> {
  readonly summary: StreamSummary;
  [Symbol.asyncIterator](): AsyncGenerator<Row, void, undefined>;
}

export type ObjectRow = { [column: string]: ExactJsonValue };
export type ArrayRow = ExactJsonValue[];

/**
 * Streams the rows of a query, verified and resumed automatically.
 * Errors reject the iteration with a `RowstreamError`.
 */
export function streamQuery<Row = ObjectRow>(
  url: string | URL,
  options: StreamQueryOptions & { shape?: "object" },
): RowStream<Row>;
export function streamQuery<Row = ArrayRow>(
  url: string | URL,
  options: StreamQueryOptions & { shape: "array" },
): RowStream<Row>;

export interface NdjsonDecoderOptions {
  /** Integers beyond 2^53 become exact `bigint`s. */
  bigint?: boolean;
  /** Longest accepted line (default 16 MiB). */
  maxLineBytes?: number;
}

/** Bytes in, one parsed JSON value per line out. Call `await init()` first. */
export class NdjsonDecoderStream<T = ExactJsonValue> extends TransformStream<
  Uint8Array,
  T
> {
  constructor(options?: NdjsonDecoderOptions);
}

/**
 * A value `ingestRows` writes into a column: integers (`number` or exact
 * 64-bit `bigint`), reals, text, `null`, booleans (stored as 1/0); arrays and
 * plain objects are stored as their JSON text (nested `bigint`s as exact
 * digits). `undefined` (or an absent key) is NULL.
 */
export type IngestValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | readonly IngestValue[]
  | { readonly [key: string]: IngestValue | undefined };

/** The JSON text of a row: every listed column of `Row` holds an `IngestValue`. */
export type IngestRow<Row> = { readonly [K in keyof Row]: IngestValue | undefined };

/** Rows for `ingestRows`: an array, any iterable, or an async iterable (e.g. an async generator). */
export type IngestSource<Row> = Iterable<Row> | AsyncIterable<Row>;

export interface IngestOptions<Column extends string = string> {
  /** The target table (an ordinary table of the token's tenant). */
  table: string;
  /**
   * The columns written, in this order. Row keys not listed are ignored; a
   * listed key that is absent or `undefined` is NULL.
   */
  columns: readonly Column[];
  /**
   * `"sha256"` (default): the server checks the SHA-256 prefix digest of the
   * row lines against the one sent in the `end` line and commits nothing on
   * a mismatch. `"none"`: no digest is sent (`integrity: "unchecked"`).
   */
  verify?: "sha256" | "none";
  /** Bearer token, or a function returning one (called once per upload). */
  token?: string | (() => string | Promise<string>);
  /** Aborting cuts the upload (the server rolls back) and rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * How the body is sent. `true`: a `ReadableStream` body (`duplex: "half"`),
   * produced as it is sent, in constant memory. `false`: the whole body is
   * built first as a `Blob` (memory grows with the upload). `"auto"`
   * (default): stream where the runtime can (Node, Deno, Bun; browsers
   * with streamed uploads on `https:` URLs, falling back to a `Blob` when the
   * connection refuses the stream before a row was read), else a `Blob`.
   */
  stream?: "auto" | boolean;
  /** The `fetch` to use (default `globalThis.fetch`); it receives `duplex: "half"` with a stream body. */
  fetch?: (input: string, init: RequestInit & { duplex?: "half" }) => Promise<Response>;
  /** Where the row lines' SHA-256 is computed: as `StreamQueryOptions.hash` (native `node:crypto` in Node by default, WebAssembly in browsers). The digest is the same. */
  hash?: "auto" | "native" | "wasm";
  /**
   * Compress the body (`Content-Encoding`; the server's size limits count
   * decoded bytes). `"gzip"`: `node:zlib` in Node (flushed after every
   * piece, so slow sources still trickle), else `CompressionStream`.
   * `"zstd"`: only where the runtime has it (Node ≥ 22.15's `node:zlib`;
   * no browser's `CompressionStream` as of 2025): otherwise the promise
   * rejects with `invalid_argument` before anything is sent. Default `false`.
   */
  compress?: "gzip" | "zstd" | false;
}

/** What `ingestRows` resolves to: the server's `end` object, plus the digest sent. */
export interface IngestResult {
  /** Rows committed (all the rows sent). */
  row_count: number;
  /** `"ok"` when the server checked a digest, `"unchecked"` otherwise. */
  integrity: "ok" | "unchecked";
  /** The server's lease id of the upload (32 hex), as in its audit log. */
  lease: string;
  /**
   * The prefix digest (PROTOCOL §2.1) of the row lines sent, computed by the
   * client (also with `verify: "none"`). Reading the same columns back in
   * the same order with `streamQuery` gives the same `prefixHash` when the
   * values round-trip unchanged and every listed column was present.
   */
  sha256: string;
}

/**
 * Uploads `rows` into `options.table` through `POST /v1/ingest/stream`
 * (`url` is that endpoint), atomically: every row lands or none does.
 * Rejects with a `RowstreamError`: the server's code (`unknown_column`,
 * `integrity_failed`, `invalid_row`, `unauthorized`, ... with `status` and
 * `details`: `line`, `column`, `expected`/`actual`, `limit`/`current`;
 * `retryAfterMs`), `invalid_row` (no `status`) for a row value that is not
 * JSON, or `ingest_interrupted` when the connection failed
 * (`details.outcome`: `"rolled_back"` before the end line was sent,
 * `"unknown"` after). An error thrown by the source, or an abort, rejects
 * with that error / `signal.reason` and rolls back.
 */
export function ingestRows<Row extends IngestRow<Row>>(
  url: string | URL,
  rows: IngestSource<Row>,
  options: IngestOptions<Extract<keyof Row, string>>,
): Promise<IngestResult>;
