// What a TypeScript user writes against the package. Checked by
// types.test.mjs with `tsc --noEmit`; `@ts-expect-error` lines fail the
// check when a type becomes too loose (`any`) to catch the mistake.
import init, {
  assessResumability,
  ingestRows,
  NdjsonDecoderStream,
  RowstreamError,
  StreamDecoder,
  streamQuery,
  type DecodedBatch,
  type ExactJsonValue,
  type IngestResult,
  type StreamProgress,
  type StreamSummary,
  type Uint64,
} from "rowstream";

export async function readUsers(url: string, signal: AbortSignal): Promise<number> {
  await init();
  const stream = streamQuery(url, { query: "SELECT id, name FROM users", bigint: true, signal });
  let n = 0;
  for await (const row of stream) {
    const id: ExactJsonValue = row.id;
    if (typeof id === "bigint" || typeof id === "number") n += 1;
  }
  const s: StreamSummary = stream.summary;
  const verified: boolean = s.verified;
  // @ts-expect-error rowCount is a number, not a string
  const wrong: string = s.rowCount;
  void wrong;
  return verified ? n : -1;
}

export function arrays(url: URL): void {
  const stream = streamQuery(url, { query: "SELECT 1", shape: "array" });
  const rows: AsyncIterable<ExactJsonValue[]> = stream;
  void rows;
  // @ts-expect-error shape is "object" or "array"
  streamQuery(url, { query: "SELECT 1", shape: "table" });
  // @ts-expect-error query is required
  streamQuery(url, {});
}

export async function decode(body: ReadableStream<Uint8Array>): Promise<ExactJsonValue[]> {
  const out: ExactJsonValue[] = [];
  const values = body.pipeThrough(new NdjsonDecoderStream({ bigint: true, maxLineBytes: 1 << 20 }));
  const reader = values.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.push(value);
  }
  return out;
}

export async function upload(url: string): Promise<string> {
  const rows = [
    { id: 1n, name: "a", tags: ["x"] },
    { id: 2, name: null, tags: [] },
  ];
  const r: IngestResult = await ingestRows(url, rows, {
    table: "users",
    columns: ["id", "name", "tags"],
    verify: "sha256",
  });
  // @ts-expect-error a column the rows do not have
  await ingestRows(url, rows, { table: "users", columns: ["email"] });
  return r.sha256;
}

export function errors(e: unknown): string {
  if (e instanceof RowstreamError) {
    const status: number | undefined = e.status;
    return `${e.code} ${status ?? ""} ${e.message}`;
  }
  const mine = new RowstreamError("cancelled", "stopped", { cause: e });
  return mine.code;
}

export function lowLevel(chunk: Uint8Array): void {
  const decoder = new StreamDecoder({ maxLineBytes: 4096 });
  const batch: DecodedBatch = decoder.push(chunk);
  decoder.free();
  const lsn: Uint64 | undefined = batch.open?.snapshot_lsn;
  void lsn;
  // @ts-expect-error an LSN may be a bigint
  const asNumber: number | undefined = batch.open?.snapshot_lsn;
  void asNumber;
  // @ts-expect-error unknown option
  new StreamDecoder({ maxLinebytes: 4096 });
  const verdict = assessResumability("SELECT * FROM t", { integerPrimaryKey: () => "id" });
  const resumable: boolean = verdict.resumable;
  void resumable;
}

export async function progressAndTotals(url: string): Promise<string> {
  const seen: StreamProgress[] = [];
  const stream = streamQuery(url, {
    query: "SELECT * FROM events",
    count: "exact",
    progressMs: 250,
    idleTimeoutMs: 45_000,
    onProgress: (p) => {
      const rows: number = p.rows;
      const total: number | null = p.totalRows;
      const exact: boolean = p.totalRowsExact;
      const from: "server" | "client" = p.source;
      void rows, total, exact, from;
      seen.push(p);
    },
  });
  for await (const _ of stream) void _;
  const s = stream.summary;
  const total: number | null = s.totalRows;
  const wire: number | undefined = s.wireBytes;
  const ignored: ("count" | "progressMs")[] = s.ignoredOptions;
  // @ts-expect-error wireBytes may be undefined
  const sure: number = s.wireBytes;
  void sure;
  // @ts-expect-error count is "none", "estimated" or "exact"
  streamQuery(url, { query: "SELECT 1", count: "approximate" });
  // @ts-expect-error onProgress takes a StreamProgress, not a number
  streamQuery(url, { query: "SELECT 1", onProgress: (p: number) => void p });
  return `${total} ${wire ?? "?"} ${ignored.join()} ${seen.length}`;
}

export async function compressedUpload(url: string): Promise<number> {
  const rows = [{ id: 1, name: "a" }];
  const gz = await ingestRows(url, rows, { table: "users", columns: ["id", "name"], compress: "gzip" });
  await ingestRows(url, rows, { table: "users", columns: ["id"], compress: false });
  // @ts-expect-error brotli uploads are not accepted by the server
  await ingestRows(url, rows, { table: "users", columns: ["id"], compress: "br" });
  return gz.row_count;
}
