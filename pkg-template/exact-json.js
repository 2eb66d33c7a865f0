// JSON parsing that keeps integers beyond Number.MAX_SAFE_INTEGER exact.
//
// An integer literal (no fraction, no exponent) outside the safe range
// becomes a BigInt; every other value parses exactly as JSON.parse would.
// Engines with JSON.parse source text access (`context.source`: Chrome 114+,
// Node 21+) use a reviver; others (Node 20) use a small exact parser, taken
// only for texts that contain a run of 16+ digits, so ordinary rows still go
// through the native JSON.parse.

const INTEGER = /^-?\d+$/;
const LONG_DIGITS = /\d{16}/;

function reviver(_key, value, context) {
  if (
    typeof value === "number" &&
    !Number.isSafeInteger(value) &&
    context !== undefined &&
    INTEGER.test(context.source)
  ) {
    return BigInt(context.source);
  }
  return value;
}

/** True when this engine passes `context.source` to JSON.parse revivers. */
export const hasSourceText = (() => {
  let seen = false;
  try {
    JSON.parse("1", (_k, v, context) => {
      seen = typeof context === "object" && context !== null && context.source === "1";
      return v;
    });
  } catch {
    seen = false;
  }
  return seen;
})();

/** Parses JSON text, keeping unsafe integers exact as BigInt. */
export function parseExact(text) {
  if (hasSourceText) return JSON.parse(text, reviver);
  return LONG_DIGITS.test(text) ? new ExactParser(text).parse() : JSON.parse(text);
}

/** A JSON parser (the `parseExact` fallback), exported for tests. */
export function parseExactFallback(text) {
  return new ExactParser(text).parse();
}

const TOKEN = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;

class ExactParser {
  constructor(text) {
    this.text = text;
    this.i = 0;
  }

  parse() {
    const v = this.value();
    this.ws();
    if (this.i !== this.text.length) this.fail();
    return v;
  }

  fail() {
    throw new SyntaxError(`Unexpected token in JSON at position ${this.i}`);
  }

  ws() {
    const t = this.text;
    while (this.i < t.length) {
      const c = t.charCodeAt(this.i);
      if (c === 32 || c === 9 || c === 10 || c === 13) this.i++;
      else break;
    }
  }

  value() {
    this.ws();
    const c = this.text.charCodeAt(this.i);
    if (c === 123) return this.object();
    if (c === 91) return this.array();
    if (c === 34) return this.string();
    TOKEN.lastIndex = this.i;
    const m = TOKEN.exec(this.text);
    if (m === null) this.fail();
    this.i = TOKEN.lastIndex;
    const tok = m[0];
    if (tok === "true") return true;
    if (tok === "false") return false;
    if (tok === "null") return null;
    if (INTEGER.test(tok)) {
      const n = Number(tok);
      return Number.isSafeInteger(n) ? n : BigInt(tok);
    }
    return Number(tok);
  }

  string() {
    const t = this.text;
    const start = this.i;
    let i = start + 1;
    for (;;) {
      const c = t.charCodeAt(i);
      if (c === 34) break;
      if (Number.isNaN(c)) {
        this.i = i;
        this.fail();
      }
      i += c === 92 ? 2 : 1;
    }
    this.i = i + 1;
    // JSON.parse validates escapes and control characters.
    return JSON.parse(t.slice(start, this.i));
  }

  array() {
    this.i++;
    const out = [];
    this.ws();
    if (this.text.charCodeAt(this.i) === 93) {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value());
      this.ws();
      const c = this.text.charCodeAt(this.i++);
      if (c === 93) return out;
      if (c !== 44) {
        this.i--;
        this.fail();
      }
    }
  }

  object() {
    this.i++;
    const out = {};
    this.ws();
    if (this.text.charCodeAt(this.i) === 125) {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.text.charCodeAt(this.i) !== 34) this.fail();
      const key = this.string();
      this.ws();
      if (this.text.charCodeAt(this.i++) !== 58) {
        this.i--;
        this.fail();
      }
      const v = this.value();
      // An own property even for "__proto__", as JSON.parse makes it.
      Object.defineProperty(out, key, {
        value: v,
        writable: true,
        enumerable: true,
        configurable: true,
      });
      this.ws();
      const c = this.text.charCodeAt(this.i++);
      if (c === 125) return out;
      if (c !== 44) {
        this.i--;
        this.fail();
      }
    }
  }
}
