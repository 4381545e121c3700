/// <reference types="node" />
// The gateway serves the console with "style-src 'self'": a style attribute
// is refused by the browser, so a page that sets one looks broken only in
// production. Styles belong in app.css.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return /\.tsx$/.test(name) && !/\.test\.tsx$/.test(name) ? [p] : [];
  });
}

describe("console sources under the gateway's CSP", () => {
  it("set no inline style (style-src 'self' refuses it)", () => {
    const offenders = sources(root).flatMap((p) =>
      readFileSync(p, "utf8")
        .split("\n")
        .map((line, i) => ({ line, at: `${relative(root, p)}:${i + 1}` }))
        .filter(({ line }) => /\bstyle=\{/.test(line))
        .map(({ at }) => at),
    );
    expect(offenders).toEqual([]);
  });
});
