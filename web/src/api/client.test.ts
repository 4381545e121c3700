import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, call, decodeError, operationURL, setTransport } from "./client";

const badRequest = {
  code: 3,
  message: "invalid credentials.api_key: the destination refused the key",
  details: [
    {
      "@type": "type.googleapis.com/google.rpc.BadRequest",
      field_violations: [
        { field: "credentials.api_key", description: "Appcues answered 401: the API key is wrong" },
        { field: "name", description: "must not be empty" },
      ],
    },
  ],
};

describe("decodeError", () => {
  it("keeps the server's words and its field violations", () => {
    const e = decodeError(400, badRequest);
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toBe(badRequest.message);
    expect(e.violationsFor("credentials")).toEqual(["Appcues answered 401: the API key is wrong"]);
    expect(e.violationsFor("name")).toEqual(["must not be empty"]);
    expect(e.violationsFor("settings")).toEqual([]);
  });
  it("says something useful for a body without a status", () => {
    const e = decodeError(502, undefined);
    expect(e.code).toBe("UNKNOWN");
    expect(e.message).toMatch(/502/);
  });
});

describe("operationURL", () => {
  it("escapes path parameters and drops empty query values", () => {
    expect(
      operationURL("SegmentSyncService_ListSegments", { query: { page_size: 50, page_token: "", visibility: "VISIBILITY_PUBLIC" } }),
    ).toBe("/v1/segments?page_size=50&visibility=VISIBILITY_PUBLIC");
    expect(operationURL("SegmentSyncService_GetUser", { path: { user_id: "a/b c" } })).toBe("/v1/users/a%2Fb%20c");
    expect(operationURL("SegmentSyncService_SyncNow", { path: { sync_id: "sync_1" }, body: {} })).toBe("/v1/syncs/sync_1:run");
  });
  it("refuses a missing path parameter instead of calling a wrong URL", () => {
    expect(() => operationURL("SegmentSyncService_GetSync", { path: { sync_id: "" } })).toThrow(/sync_id/);
  });
});

describe("call", () => {
  afterEach(() => setTransport({ key: () => undefined }));

  it("sends the session's key and the body, and returns the answer", async () => {
    const fetch = vi.fn(async () => new Response(JSON.stringify({ run: { run_id: "run_1" } }), { status: 200 }));
    setTransport({ key: () => "sghk_test", fetch });
    const out = await call("SegmentSyncService_SyncNow", { path: { sync_id: "sync_1" }, body: {} });
    expect(out.run?.run_id).toBe("run_1");
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("/v1/syncs/sync_1:run");
    expect(init.method).toBe("POST");
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer sghk_test");
    expect(init.body).toBe("{}");
  });

  it("turns a refusal into an ApiError and tells the session about a refused key", async () => {
    const onUnauthenticated = vi.fn();
    const fetch = vi.fn(async () => new Response(JSON.stringify({ code: 16, message: "unknown or revoked API key" }), { status: 401 }));
    setTransport({ key: () => "sghk_old", fetch, onUnauthenticated });
    const err = await call("AdminService_WhoAmI", {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).message).toBe("unknown or revoked API key");
    expect(onUnauthenticated).toHaveBeenCalledOnce();
  });
});
