// The console's sign-in: API keys pasted by the user, kept in sessionStorage so
// they live as long as the tab and no longer. One key reaches one environment;
// holding keys of several environments is what the environment switcher
// switches between.
import { operationAccess, type Operations, type Role } from "../api/schema.gen";

export interface SignedInKey {
  secret: string;
  environmentId: string;
  apiKeyId: string;
  role: Role;
}

export interface Session {
  keys: SignedInKey[];
  /** Environment of the key in use. */
  current: string;
}

export const storageKey = "seghub.session";

function storage(): Storage | undefined {
  try {
    return globalThis.sessionStorage;
  } catch {
    return undefined;
  }
}

export function loadSession(): Session | undefined {
  const raw = storage()?.getItem(storageKey);
  if (!raw) return undefined;
  try {
    const s = JSON.parse(raw) as Session;
    if (!Array.isArray(s.keys) || s.keys.length === 0) return undefined;
    if (!s.keys.some((k) => k.environmentId === s.current)) s.current = s.keys[0]!.environmentId;
    return s;
  } catch {
    return undefined;
  }
}

export function saveSession(s: Session | undefined): void {
  const st = storage();
  if (!st) return;
  if (!s || s.keys.length === 0) st.removeItem(storageKey);
  else st.setItem(storageKey, JSON.stringify(s));
}

/** Adds k (replacing a key of the same environment) and makes it current. */
export function withKey(s: Session | undefined, k: SignedInKey): Session {
  const keys = (s?.keys ?? []).filter((x) => x.environmentId !== k.environmentId);
  keys.push(k);
  return { keys, current: k.environmentId };
}

/** Drops the key of one environment (e.g. after the server refused it). */
export function withoutEnvironment(s: Session, environmentId: string): Session | undefined {
  const keys = s.keys.filter((k) => k.environmentId !== environmentId);
  if (keys.length === 0) return undefined;
  return { keys, current: s.current === environmentId ? keys[0]!.environmentId : s.current };
}

export function currentKey(s: Session | undefined): SignedInKey | undefined {
  return s?.keys.find((k) => k.environmentId === s.current);
}

/** What a key's role may do in the console, with the reason when it may not. */
export interface Access {
  role: Role;
  isAdmin: boolean;
  /** Why admin-only controls are read-only; empty for admins. */
  adminOnlyReason: string;
  /** Whether this role may call op (the access level its .proto declares; same rule as pkg/auth.Allowed). */
  may(op: keyof Operations): boolean;
  /** Why op is not offered, or "" when it is. */
  reasonFor(op: keyof Operations): string;
}

export function allowed(op: keyof Operations, role: Role): boolean {
  switch (operationAccess[op]) {
    case "ADMIN":
      return role === "ROLE_ADMIN";
    case "MEMBER":
      return role === "ROLE_ADMIN" || role === "ROLE_MEMBER";
    case "ANY":
      // Client keys (browser-safe) only evaluate flags over OFREP, as in pkg/auth.Allowed.
      return role !== "ROLE_UNSPECIFIED" && role !== "ROLE_CLIENT";
  }
}

export function accessOf(role: Role | undefined): Access {
  const r = role ?? "ROLE_UNSPECIFIED";
  const isAdmin = r === "ROLE_ADMIN";
  const name =
    r === "ROLE_MEMBER"
      ? "a member key"
      : r === "ROLE_SERVICE"
        ? "a service key"
        : r === "ROLE_CLIENT"
          ? "a client key"
          : "a key without a role";
  const adminOnlyReason = isAdmin ? "" : `Only admins can change this; you are signed in with ${name}. Ask an admin, or sign in with an admin key.`;
  return {
    role: r,
    isAdmin,
    adminOnlyReason,
    may: (op) => allowed(op, r),
    reasonFor: (op) =>
      allowed(op, r)
        ? ""
        : operationAccess[op] === "ADMIN"
          ? adminOnlyReason
          : `Your key (${name}) may not do this; sign in with a member or admin key.`,
  };
}

export function roleLabel(role: Role | undefined): string {
  switch (role) {
    case "ROLE_ADMIN":
      return "admin";
    case "ROLE_MEMBER":
      return "member";
    case "ROLE_SERVICE":
      return "service";
    case "ROLE_CLIENT":
      return "client";
    default:
      return "unknown role";
  }
}
