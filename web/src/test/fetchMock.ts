import { vi } from "vitest";

type Route = (url: URL, init: RequestInit) => { status?: number; body: unknown } | undefined;

/** Stubs fetch with routes tried in order; an unrouted call fails the test loudly. */
export function mockFetch(...routes: Route[]) {
  const fn = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = new URL(String(input), "http://console.test");
    for (const r of routes) {
      const out = r(url, init);
      if (out) return new Response(JSON.stringify(out.body), { status: out.status ?? 200, headers: { "Content-Type": "application/json" } });
    }
    throw new Error(`unexpected ${init.method ?? "GET"} ${url.pathname}${url.search}`);
  });
  vi.stubGlobal("fetch", fn);
  return fn;
}

export const on =
  (method: string, path: string, reply: (url: URL, init: RequestInit) => { status?: number; body: unknown }): Route =>
  (url, init) =>
    (init.method ?? "GET") === method && url.pathname === path ? reply(url, init) : undefined;
