import { useEffect, useRef, useState, type FormEvent } from "react";
import { apiKeysPageSize, useApiKeysPage, useCreateApiKey, useRevokeApiKey } from "../api/admin";
import { placeFieldErrors } from "../api/fieldErrors";
import type { ApiKey, Role } from "../api/schema.gen";
import { when } from "../format";
import { useSession } from "../session/SessionContext";
import { roleLabel } from "../session/store";
import { ConfirmDialog } from "./ConfirmDialog";
import { CopyButton } from "./CopyButton";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedButton, GuardedFieldset } from "./Guarded";
import { ListStatus } from "./ListStatus";
import { ListPager, usePageTokens } from "./Pager";

const roles: readonly { role: Role; label: string; words: string }[] = [
  { role: "ROLE_MEMBER", label: "Member", words: "Uses segments, syncs, targeting and events; no admin actions." },
  { role: "ROLE_ADMIN", label: "Admin", words: "Everything, including connections, keys and environments." },
  { role: "ROLE_SERVICE", label: "Service", words: "For seghub's own services calling each other; not for people." },
  {
    role: "ROLE_CLIENT",
    label: "Client (browser-safe)",
    words:
      "For web pages: evaluates product tours, checklists and public segments over OFREP (POST /ofrep/v1/evaluate/flags) and nothing else.",
  },
];

/** A new key's secret: shown here once, never again (seghub keeps only its hash). */
export function KeySecretOnce({ title, secret, onDone }: { title: string; secret: string; onDone: () => void }) {
  // Brought into view and focus: it appears below the form and is the one thing to act on now.
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    ref.current?.scrollIntoView?.({ block: "center" });
    ref.current?.focus();
  }, [secret]);
  return (
    <div className="notice" role="region" aria-label={title} tabIndex={-1} ref={ref}>
      <p>
        <strong>{title}: copy it now. seghub shows it only once</strong> and stores only its hash.
      </p>
      <p className="secret" data-testid="key-secret">
        {secret}
      </p>
      <div className="actions">
        <CopyButton text={secret} label="Copy key" />
        <button type="button" onClick={onDone}>
          I have copied it
        </button>
      </div>
    </div>
  );
}

/** The environment's API keys: list, create (secret shown once), revoke with confirmation. */
export function ApiKeys() {
  const { key } = useSession();
  const [includeRevoked, setIncludeRevoked] = useState(false);
  const [revoking, setRevoking] = useState<ApiKey | undefined>();
  const pages = usePageTokens();
  const list = useApiKeysPage(includeRevoked, pages.token, true);
  const revoke = useRevokeApiKey();
  const items = list.data?.api_keys ?? [];
  const own = (k?: ApiKey) => !!k && k.id === key?.apiKeyId;
  return (
    <>
      <div className="toolbar">
        <label className="toggle">
          <input
            type="checkbox"
            checked={includeRevoked}
            onChange={(e) => {
              setIncludeRevoked(e.target.checked);
              pages.reset();
            }}
          />
          Show revoked keys
        </label>
      </div>
      <ListStatus
        error={list.error}
        empty={!!list.data && items.length === 0 && pages.page === 1}
        title="No keys to show."
      >
        <p>Create one above for each person or system that calls seghub.</p>
      </ListStatus>
      {items.length > 0 && (
        <table>
          <caption className="muted table-caption">
            Oldest first, {apiKeysPageSize} a page. Only the first characters of each key are kept to tell them apart.
          </caption>
          <thead>
            <tr>
              <th>Name</th>
              <th>Role</th>
              <th>Starts with</th>
              <th>Created</th>
              <th>
                <span className="sr-only">Revoke</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {items.map((k) => (
              <tr key={k.id}>
                <td>
                  {k.name || <span className="muted">(no name)</span>}
                  {own(k) && <div className="muted">the key you are signed in with</div>}
                </td>
                <td>{roleLabel(k.role)}</td>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>{when(k.create_time)}</td>
                <td>
                  {k.revoke_time ? (
                    <span className="muted">Revoked {when(k.revoke_time)}</span>
                  ) : (
                    <GuardedButton
                      op="AdminService_RevokeApiKey"
                      className="danger"
                      aria-label={`Revoke ${k.name || k.prefix}`}
                      onClick={() => setRevoking(k)}
                    >
                      Revoke…
                    </GuardedButton>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ListPager label="API key pages" pages={pages} list={list} />
      <CreateApiKey />
      <ConfirmDialog
        title={`Revoke ${revoking?.name || revoking?.prefix || "this key"}?`}
        open={!!revoking}
        onClose={() => setRevoking(undefined)}
        error={revoke.error}
        confirmLabel="Revoke key"
        pending={revoke.isPending}
        onConfirm={() => revoke.mutate({ path: { id: revoking?.id ?? "" }, body: {} }, { onSuccess: () => setRevoking(undefined) })}
      >
        <p>Every request with it fails from then on, within a second. This cannot be undone: a new key has a new secret.</p>
        {own(revoking) && (
          <p className="reason">This is the key you are signed in with: revoking it signs this tab out.</p>
        )}
      </ConfirmDialog>
    </>
  );
}

function CreateApiKey() {
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("ROLE_MEMBER");
  const [secret, setSecret] = useState("");
  const create = useCreateApiKey();
  const { byField, unplaced } = placeFieldErrors(create.error, ["name", "role"]);
  function submit(e: FormEvent) {
    e.preventDefault();
    create.mutate(
      { body: { name: name.trim(), role } },
      {
        onSuccess: (a) => {
          setSecret(a.secret ?? "");
          setName("");
        },
      },
    );
  }
  return (
    <form onSubmit={submit} className="card">
      <GuardedFieldset op="AdminService_CreateApiKey" legend="Create an API key">
        <Field label="Name" hint="Who or what uses it, e.g. “growth team” or “nightly export”." errors={byField["name"]}>
          <input type="text" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
        </Field>
        <Field label="Role" hint={roles.find((r) => r.role === role)?.words} errors={byField["role"]}>
          <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {roles.map((r) => (
              <option key={r.role} value={r.role}>
                {r.label}
              </option>
            ))}
          </select>
        </Field>
        <ErrorNotice error={create.error} extra={unplaced} />
        <button type="submit" className="primary" disabled={create.isPending}>
          Create key
        </button>
      </GuardedFieldset>
      {secret && <KeySecretOnce title="The new key" secret={secret} onDone={() => setSecret("")} />}
    </form>
  );
}
