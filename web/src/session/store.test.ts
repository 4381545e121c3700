import { describe, expect, it } from "vitest";
import { accessOf, currentKey, loadSession, saveSession, storageKey, withKey, withoutEnvironment, type SignedInKey } from "./store";

const admin: SignedInKey = { secret: "sghk_a", environmentId: "env_a", apiKeyId: "key_a", role: "ROLE_ADMIN" };
const member: SignedInKey = { secret: "sghk_b", environmentId: "env_b", apiKeyId: "key_b", role: "ROLE_MEMBER" };

describe("session storage", () => {
  it("keeps keys in sessionStorage only, and signing out clears them", () => {
    saveSession(withKey(undefined, admin));
    expect(sessionStorage.getItem(storageKey)).toContain("sghk_a");
    expect(localStorage.getItem(storageKey)).toBeNull();
    expect(currentKey(loadSession())).toEqual(admin);
    saveSession(undefined);
    expect(sessionStorage.getItem(storageKey)).toBeNull();
    expect(loadSession()).toBeUndefined();
  });

  it("holds one key per environment and switches to the one added", () => {
    let s = withKey(withKey(undefined, admin), member);
    expect(s.keys.map((k) => k.environmentId)).toEqual(["env_a", "env_b"]);
    expect(s.current).toBe("env_b");
    s = withKey(s, { ...admin, secret: "sghk_a2" });
    expect(s.keys).toHaveLength(2);
    expect(currentKey(s)?.secret).toBe("sghk_a2");
  });

  it("drops a refused key and falls back to another environment", () => {
    const s = withKey(withKey(undefined, admin), member);
    const after = withoutEnvironment(s, "env_b");
    expect(after?.current).toBe("env_a");
    expect(withoutEnvironment(after!, "env_a")).toBeUndefined();
  });

  it("ignores a damaged stored session", () => {
    sessionStorage.setItem(storageKey, "{not json");
    expect(loadSession()).toBeUndefined();
  });
});

describe("accessOf", () => {
  it("follows the access each RPC declares in its .proto", () => {
    const m = accessOf("ROLE_MEMBER");
    expect(m.may("SegmentSyncService_DryRun")).toBe(true);
    expect(m.may("SegmentSyncService_SyncNow")).toBe(false);
    expect(m.may("ConnectorService_CreateConnection")).toBe(false);
    expect(m.reasonFor("SegmentSyncService_EnableSync")).toMatch(/Only admins/);
    const a = accessOf("ROLE_ADMIN");
    expect(a.may("SegmentSyncService_SyncNow")).toBe(true);
    expect(a.reasonFor("SegmentSyncService_SyncNow")).toBe("");
    expect(accessOf(undefined).may("AdminService_WhoAmI")).toBe(false);
  });

  it("gives a client key nothing in the console: it only evaluates flags over OFREP", () => {
    const c = accessOf("ROLE_CLIENT");
    expect(c.may("AdminService_WhoAmI")).toBe(false);
    expect(c.may("TargetingService_CheckMembership")).toBe(false);
    expect(c.may("TargetingService_ListExperiences")).toBe(false);
    expect(c.reasonFor("TargetingService_ListExperiences")).toMatch(/a client key/);
  });
});
