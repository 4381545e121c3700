import { useState, type FormEvent } from "react";
import { useNavigate, useSearchParams } from "react-router";
import { ErrorNotice } from "../components/ErrorNotice";
import { Field } from "../components/Field";
import { useSession } from "../session/SessionContext";

/** Paste an API key once; it is kept for this tab only. */
export function SignInPage() {
  const { signIn, session, refusedNotice } = useSession();
  const [secret, setSecret] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const navigate = useNavigate();
  const [params] = useSearchParams();
  const adding = params.get("add") === "1" && !!session;
  const next = params.get("next") || "/segments";

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!secret.trim()) {
      setError(new Error("Paste an API key first."));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await signIn(secret);
      navigate(next.startsWith("/") && !next.startsWith("//") ? next : "/segments", { replace: true });
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="signin">
      <h1>{adding ? "Add a key for another environment" : "Sign in to seghub"}</h1>
      {refusedNotice && !adding && <p className="notice">{refusedNotice}</p>}
      <form onSubmit={submit} noValidate>
        <Field
          label="API key"
          hint={
            <>
              The key <code>make run</code> printed, or one an admin created for you under Admin. It is kept in this tab
              only and forgotten when you sign out or close the tab.
            </>
          }
        >
          <input
            type="password"
            autoComplete="off"
            spellCheck={false}
            value={secret}
            onChange={(e) => setSecret(e.target.value)}
            placeholder="sghk_…"
            autoFocus
          />
        </Field>
        <ErrorNotice error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Checking…" : adding ? "Add key" : "Sign in"}
        </button>
      </form>
    </div>
  );
}
