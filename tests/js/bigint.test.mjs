// Exact integers: beyond 2^53 nothing is rounded when the caller asks for it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rowstream, encoder, streamOf, collect, prng } from "./helpers.mjs";
import { parseExactFallback, hasSourceText } from "../../pkg/exact-json.js";

const { parseExact, NdjsonDecoderStream } = rowstream;

const BIG = '{"a":9007199254740993,"b":-9223372036854775808,"c":18446744073709551615,"d":9007199254740991,"e":1.5e300,"f":"12345678901234567890","g":[12345678901234567890123]}';

for (const [name, parse] of [["parseExact", parseExact], ["fallback parser", parseExactFallback]]) {
  test(`${name}: unsafe integers become exact BigInt, the rest stays JSON`, () => {
    const v = parse(BIG);
    assert.equal(v.a, 9007199254740993n);
    assert.equal(v.b, -9223372036854775808n);
    assert.equal(v.c, 18446744073709551615n);
    assert.equal(v.d, 9007199254740991, "safe integers stay numbers");
    assert.equal(v.e, 1.5e300, "non-integers stay numbers");
    assert.equal(v.f, "12345678901234567890", "strings stay strings");
    assert.equal(v.g[0], 12345678901234567890123n);
  });
}

test("the fallback parser agrees with JSON.parse on ordinary JSON", () => {
  const rnd = prng(3);
  const gen = (depth) => {
    const k = Math.floor(rnd() * (depth > 3 ? 5 : 7));
    switch (k) {
      case 0: return null;
      case 1: return rnd() < 0.5;
      case 2: return Math.floor(rnd() * 2 ** 40) * (rnd() < 0.5 ? -1 : 1);
      case 3: return rnd() * 1e6;
      case 4: return ["", "a\"b", "\\", "\u00e9\u{1F600}", "\n\t", "\u0000", "__proto__"][Math.floor(rnd() * 7)];
      case 5: return Array.from({ length: Math.floor(rnd() * 4) }, () => gen(depth + 1));
      default: {
        const o = {};
        for (let i = 0; i < Math.floor(rnd() * 4); i++) o[["k", "__proto__", "x y", "\u00e9"][i]] = gen(depth + 1);
        return o;
      }
    }
  };
  for (let i = 0; i < 500; i++) {
    const text = JSON.stringify(gen(0), null, i % 2 ? 1 : undefined);
    assert.deepEqual(parseExactFallback(text), JSON.parse(text), text);
  }
  for (const bad of ["[1,]", '{"a" 1}', "[01]", '"\\x"', "[1", "tru", "1 2", '{"a":1,}', "", "-"]) {
    assert.throws(() => parseExactFallback(bad), SyntaxError, bad);
  }
});

test("engine support for JSON.parse source text is detected", () => {
  const major = Number(process.versions.node.split(".")[0]);
  if (major <= 20) assert.equal(hasSourceText, false);
  assert.equal(typeof hasSourceText, "boolean");
});

test("NdjsonDecoderStream({ bigint: true }) keeps 64-bit ids exact; the default rounds", async () => {
  const body = encoder.encode('{"row":{"id":9223372036854775807}}\n{"row":{"id":1}}\n');
  const exact = await collect(streamOf([body]).pipeThrough(new NdjsonDecoderStream({ bigint: true })));
  assert.deepEqual(exact, [{ row: { id: 9223372036854775807n } }, { row: { id: 1 } }]);
  const plain = await collect(streamOf([body]).pipeThrough(new NdjsonDecoderStream()));
  assert.equal(typeof plain[0].row.id, "number");
});
