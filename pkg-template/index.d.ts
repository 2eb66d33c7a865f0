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
  FramerOptions,
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
  | "not_initialized";

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
