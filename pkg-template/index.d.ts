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
  | "ingest_interrupted";

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
  /** Body bytes received, across responses. */
  bytes: number;
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
