// Real-server plumbing for server.test.mjs: a SQLite fixture, the server
// process (ROWSTREAM_BIN), and a TCP proxy that injects faults.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";

export const BIN = process.env.ROWSTREAM_BIN;
export const TOKEN = "test-token";

/** A database with `t` (ROWS rows, multi-byte text, 64-bit integers) and `big`. */
export function makeDatabase(rows, bigRows) {
  const dir = mkdtempSync(join(tmpdir(), "rowstream-js-"));
  const db = join(dir, "test.db");
  const sql = `
    CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, big INTEGER, note TEXT);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${rows})
    INSERT INTO t SELECT x, CASE x WHEN 30 THEN 'tamper-me' ELSE 'name-' || x END,
      9007199254740993 + x * 1000003, 'h\u00e9llo \u{1F600} \u4e16\u754c ' || x FROM c;
    CREATE TABLE big(id INTEGER PRIMARY KEY, pad TEXT);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${bigRows})
    INSERT INTO big SELECT x, printf('%.200c', '\u00e9') FROM c;
  `;
  try {
    execFileSync("sqlite3", [db], { input: sql });
  } catch (e) {
    throw new Error(`the sqlite3 command line tool is needed to build the test database: ${e.message}`);
  }
  return { db, dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Starts `rowstream serve`; resolves to { url, stop }. */
export function startServer(db, extraArgs = []) {
  const args = ["serve", "--db", db, "--listen", "127.0.0.1:0", "--token", `${TOKEN}=default:alice`,
    "--token", `other-token=default:bob`, "--audit-log", `${db}.audit.jsonl`, ...extraArgs];
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`server did not start within 30 s: ${stderr}`));
    }, 30_000);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          base: m[1],
          url: `${m[1]}/v1/query/stream`,
          stop: () => new Promise((r) => {
            if (child.exitCode !== null) return r();
            child.once("exit", r);
            child.kill();
          }),
        });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}: ${stderr}`));
    });
  });
}

/**
 * A TCP proxy in front of `base`. plan.cuts[i]: connection i is closed after
 * that many response bytes. plan.flip: on the first connection, the first
 * occurrence of plan.flip.find (a Buffer) in the response is replaced by
 * plan.flip.replace (same length). plan.acceptEncoding: replaces the
 * requests' Accept-Encoding. plan.flipAt: see below. plan.stalls[i]:
 * connection i forwards nothing after that many response bytes and stays
 * open (a stuck path: only a client-side idle timeout gets out of it).
 */
export async function startProxy(base, plan = {}) {
  const target = new URL(base);
  let connections = 0;
  const sockets = new Set();
  // Bytes each connection forwarded to the client (as sent: compressed).
  const wire = [];
  const server = net.createServer((client) => {
    const index = connections++;
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const kill = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", kill);
    upstream.on("error", kill);
    client.on("close", () => upstream.destroy());
    upstream.on("end", () => client.end());
    if (plan.acceptEncoding === undefined) {
      client.pipe(upstream);
    } else {
      // Stands in for the client's Accept-Encoding (every request head on
      // the connection), so a test picks the coding the server sends.
      client.on("data", (buf) => {
        const text = buf.toString("latin1").replace(/\r\naccept-encoding:[^\r]*/gi, "");
        const rewritten = text.replace(/\r\n\r\n/, `\r\naccept-encoding: ${plan.acceptEncoding}\r\n\r\n`);
        upstream.write(text.includes("HTTP/1.1\r\n") ? Buffer.from(rewritten, "latin1") : buf);
      });
      client.on("end", () => upstream.end());
    }
    const cut = plan.cuts?.[index] ?? plan.stalls?.[index];
    const stall = plan.stalls?.[index] !== undefined;
    let sent = 0;
    wire[index] = 0;
    let pending = plan.flip && index === 0 ? Buffer.alloc(0) : null;
    // plan.flipAt: XOR one byte at that offset of the first response (a
    // compressed body's bytes, as sent).
    const flipAt = index === 0 ? plan.flipAt : undefined;
    const forward = (buf) => {
      if (flipAt !== undefined && sent <= flipAt && flipAt < sent + buf.length) {
        buf = Buffer.from(buf);
        buf[flipAt - sent] ^= 0x5a;
      }
      if (cut !== undefined && sent + buf.length >= cut) {
        client.write(buf.subarray(0, cut - sent), () => {
          if (!stall) kill();
        });
        sent = cut;
        upstream.pause();
        return;
      }
      sent += buf.length;
      wire[index] = sent;
      client.write(buf);
    };
    upstream.on("data", (buf) => {
      if (sent >= (cut ?? Infinity)) return;
      if (pending !== null) {
        pending = Buffer.concat([pending, buf]);
        const at = pending.indexOf(plan.flip.find);
        if (at >= 0) {
          plan.flip.replace.copy(pending, at);
          const all = pending;
          pending = null;
          forward(all);
        } else if (pending.length > plan.flip.find.length) {
          const keep = plan.flip.find.length - 1;
          const out = pending.subarray(0, pending.length - keep);
          pending = Buffer.from(pending.subarray(pending.length - keep));
          forward(out);
        }
        return;
      }
      forward(buf);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    base: `http://127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}/v1/query/stream`,
    get connections() {
      return connections;
    },
    wire,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}

export async function stats(base) {
  const res = await fetch(`${base}/v1/debug/stats`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return res.json();
}

export async function waitFor(what, predicate, ms = 10_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
