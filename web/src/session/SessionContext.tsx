import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { call, setTransport } from "../api/client";
import {
  accessOf,
  currentKey,
  loadSession,
  saveSession,
  withKey,
  withoutEnvironment,
  type Access,
  type Session,
  type SignedInKey,
} from "./store";

interface SessionValue {
  session: Session | undefined;
  key: SignedInKey | undefined;
  access: Access;
  /** Checks secret with the server (WhoAmI) and signs in with it. */
  signIn(secret: string): Promise<SignedInKey>;
  /** Forgets every key of this tab. */
  signOut(): void;
  switchEnvironment(environmentId: string): void;
  /** Set when the server refused the key in use, so the sign-in page can say why. */
  refusedNotice: string;
}

const Ctx = createContext<SessionValue | undefined>(undefined);

export function SessionProvider({ children }: { children: ReactNode }) {
  const qc = useQueryClient();
  const [session, setSession] = useState<Session | undefined>(() => loadSession());
  const [refusedNotice, setRefusedNotice] = useState("");

  const update = useCallback(
    (next: Session | undefined) => {
      saveSession(next);
      setSession(next);
      // Every answer in the cache belongs to the previous key's environment.
      qc.clear();
    },
    [qc],
  );

  // The transport reads the session from storage at call time, so a request
  // never goes out with a key the user has signed out of.
  setTransport({
    key: () => currentKey(loadSession())?.secret,
    onUnauthenticated: () => {
      const s = loadSession();
      if (!s) return;
      setRefusedNotice("The server no longer accepts that key (revoked or unknown). Sign in again.");
      update(withoutEnvironment(s, s.current));
    },
  });

  const signIn = useCallback(
    async (secret: string) => {
      const trimmed = secret.trim();
      const who = await call("AdminService_WhoAmI", {}, { key: trimmed });
      const k: SignedInKey = {
        secret: trimmed,
        environmentId: who.environment_id ?? "",
        apiKeyId: who.api_key_id ?? "",
        role: who.role ?? "ROLE_UNSPECIFIED",
      };
      setRefusedNotice("");
      update(withKey(loadSession(), k));
      return k;
    },
    [update],
  );

  const signOut = useCallback(() => update(undefined), [update]);
  const switchEnvironment = useCallback(
    (environmentId: string) => {
      const s = loadSession();
      if (s && s.keys.some((k) => k.environmentId === environmentId)) update({ ...s, current: environmentId });
    },
    [update],
  );

  const key = currentKey(session);
  const value = useMemo<SessionValue>(
    () => ({ session, key, access: accessOf(key?.role), signIn, signOut, switchEnvironment, refusedNotice }),
    [session, key, signIn, signOut, switchEnvironment, refusedNotice],
  );
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useSession(): SessionValue {
  const v = useContext(Ctx);
  if (!v) throw new Error("useSession outside SessionProvider");
  return v;
}

export function useAccess(): Access {
  return useSession().access;
}
