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
