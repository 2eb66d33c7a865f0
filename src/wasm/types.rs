//! TypeScript declarations shared by the bindings' signatures.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/**
 * A 64-bit unsigned integer handed out by the bindings: a `number` when it is
 * a safe integer (up to 2^53 - 1), an exact `bigint` beyond, never rounded.
 */
export type Uint64 = number | bigint;

/**
 * Option bags (`FramerOptions`, `ProducerOptions`, ...) are checked: an
 * unknown key, or a value of the wrong type, throws `invalid_argument` naming
 * the key.
 */

/** Options of `NdjsonFramer` and `StreamDecoder`. */
export interface FramerOptions {
  /** Longest accepted line in bytes (default 16 MiB). */
  maxLineBytes?: number;
}

/** Options of `StreamDecoder`. */
export interface StreamDecoderOptions extends FramerOptions {
  /**
   * Leave the SHA-256 to the caller (default false): after each `push` /
   * `endOfBody`, feed `hashInput()` to an incremental SHA-256 and report its
   * running digest with `inputHashed(hex)` before using the rows.
   */
  externalHashing?: boolean;
}

/** Every error thrown by the bindings: a real `Error` with a stable code. */
export interface CodedError extends Error {
  code: string;
  /** 1-based line number, for framing and verification errors. */
  line?: number;
  /** Framing errors: the lines of the failing chunk before the bad one. */
  lines?: string[];
  /** `line_too_long`: the limit in bytes. */
  limit?: number;
  /** `invalid_utf8`: byte offset of the bad sequence within the line. */
  offset?: number;
  /** `clock_failed`: the chunks the failing call produced (write them). */
  chunks?: Uint8Array[];
}

/** A result column as the `open` line lists it. */
export interface Column {
  name: string;
  type: string;
}

/** The `open` line of a response (PROTOCOL.md §2). */
export interface OpenFrame {
  lease: string;
  snapshot_lsn: Uint64;
  resumable: boolean;
  reason?: string;
  cursor: string | null;
  expires_at_ms: Uint64;
  columns: Column[];
  after_rows: Uint64;
}

/** The `end` line of a response. */
export interface EndFrame {
  reason: "ok" | "cancelled" | "error" | "snapshot_expired";
  row_count: Uint64;
  prefix_hash: string;
  lease: string;
  bytes: Uint64;
}

/** A structured server error (refusal body or in-band `error` line). */
export interface ErrorBody {
  code: string;
  message: string;
  [extra: string]: unknown;
}

/** What `StreamDecoder.push` found in one chunk. */
export interface DecodedBatch {
  /** The chunk's row values as the text of one JSON array (`"[]"` when none). */
  rows: string;
  rowCount: number;
  open?: OpenFrame;
  error?: ErrorBody;
  end?: EndFrame;
}

/** Body of a resume request. */
export interface ResumeRequest {
  cursor: string;
  after_rows: number;
  prefix_hash: string;
}

/** Options of `ChunkProducer`. */
export interface ProducerOptions {
  /** Buffer size in 16 KiB pages (default 4). */
  pages?: number;
  /** Buffer size in bytes (overrides `pages`). */
  bufferBytes?: number;
  /** Row cap per chunk (default 1000). */
  maxRows?: number;
  /** Latency cap in ms from the first buffered row (default 50). */
  maxLatencyMs?: number;
  /** Clock in ms (default `Date.now`). A throwing clock makes the call throw `clock_failed`. */
  now?: () => number;
}

export type FlushReason = "bytes" | "rows" | "latency" | "finish" | "explicit";

export interface ProducerTotals {
  rows: number;
  controlLines: number;
  bytes: number;
  chunks: number;
  maxChunkBytes: number;
}

export interface CursorRegistryOptions {
  /** How long a cancelled or expired cursor keeps its precise answer (default 10 min). */
  tombstoneGraceMs?: number;
}

export interface CursorScope {
  tenant: string;
  principal: string;
}

export interface NewCursor extends CursorScope {
  query: string;
  snapshotLsn?: number | bigint;
  firstLease?: string;
  expiresAtMs: number | bigint;
}

export interface CursorInfo extends CursorScope {
  token: string;
  query: string;
  /** As registered (0 when absent). */
  snapshotLsn: Uint64;
  firstLease: string;
  expiresAtMs: Uint64;
  payload: unknown;
}

export interface CursorStats {
  live: number;
  tombstones: number;
}

/** Options of `assessResumability`. */
export interface AssessOptions {
  /** The table's INTEGER PRIMARY KEY column, so `ORDER BY` it counts as rowid order. */
  integerPrimaryKey?: (table: string) => string | null | undefined;
}

/** Whether a query can be resumed (PROTOCOL.md §2.5). */
export interface Resumability {
  resumable: boolean;
  /** Stable snake_case code when not resumable. */
  reason: string | null;
  table: string | null;
  hasLimit: boolean;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `FramerOptions` (read by `js::options`).
    #[wasm_bindgen(typescript_type = "FramerOptions")]
    pub type FramerOptionsArg;
    /// `StreamDecoderOptions`.
    #[wasm_bindgen(typescript_type = "StreamDecoderOptions")]
    pub type StreamDecoderOptionsArg;
    /// `ProducerOptions`.
    #[wasm_bindgen(typescript_type = "ProducerOptions")]
    pub type ProducerOptionsArg;
    /// `CursorRegistryOptions`.
    #[wasm_bindgen(typescript_type = "CursorRegistryOptions")]
    pub type CursorRegistryOptionsArg;
    /// `AssessOptions`.
    #[wasm_bindgen(typescript_type = "AssessOptions")]
    pub type AssessOptionsArg;
}
