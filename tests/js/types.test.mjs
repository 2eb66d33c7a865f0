// The package's types as a TypeScript user sees them: `tsc --noEmit` over
// types/usage.ts (streamQuery, NdjsonDecoderStream, ingestRows,
// RowstreamError, the bindings) against the built pkg/, with
// `lib: ["es2022", "dom"]` and `skipLibCheck: false`, and again on esnext.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = new URL("./", import.meta.url);
const pkgTypes = fileURLToPath(new URL("../../pkg/index.d.ts", here));
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

function typecheck(config) {
  assert.ok(existsSync(pkgTypes), `the built package is missing (${pkgTypes}): run scripts/build-pkg.sh first`);
  try {
    execFileSync(process.execPath, [tsc, "--noEmit", "-p", fileURLToPath(new URL(`types/${config}`, here))], {
      encoding: "utf8",
      stdio: "pipe",
    });
  } catch (e) {
    assert.fail(`tsc -p types/${config} failed:\n${e.stdout}${e.stderr}`);
  }
}

test("the package type-checks under lib es2022 + dom without skipLibCheck", () => {
  typecheck("tsconfig.json");
});

test("the package type-checks under lib esnext + dom (its own Symbol.dispose)", () => {
  typecheck("tsconfig.esnext.json");
});
