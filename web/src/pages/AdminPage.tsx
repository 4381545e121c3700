import { useState, type FormEvent } from "react";
import { useCreateEnvironment, useEnvironments } from "../api/admin";
import { placeFieldErrors } from "../api/fieldErrors";
import { ApiKeys, KeySecretOnce } from "../components/ApiKeys";
import { ErrorNotice } from "../components/ErrorNotice";
import { Field } from "../components/Field";
import { GuardedFieldset, RoleNotice } from "../components/Guarded";
import { ListStatus } from "../components/ListStatus";
import { when } from "../format";
import { useSession } from "../session/SessionContext";
import { roleLabel } from "../session/store";

/** Environments and API keys; admin-only, so others see why instead of controls. */
export default function AdminPage() {
  const { key, access } = useSession();
  return (
    <section>
      <h1>Admin</h1>
      <dl className="facts">
        <dt>Your key</dt>
        <dd>
          <code>{key?.apiKeyId}</code> ({roleLabel(key?.role)})
        </dd>
        <dt>Environment</dt>
        <dd>
          <code>{key?.environmentId}</code>
        </dd>
      </dl>
      <RoleNotice>Environments and API keys are listed and managed here by admins only.</RoleNotice>
      {access.isAdmin && (
        <>
          <h2>Environments</h2>
          <Environments />
          <h2>API keys of this environment</h2>
          <ApiKeys />
        </>
      )}
    </section>
  );
}

function Environments() {
  const { key, signIn } = useSession();
  const envs = useEnvironments(true);
  const create = useCreateEnvironment();
  const [name, setName] = useState("");
  const [created, setCreated] = useState<{ name: string; secret: string } | undefined>();
  const [signInError, setSignInError] = useState<unknown>();
  const { byField, unplaced } = placeFieldErrors(create.error, ["name"]);
  const items = envs.data?.environments ?? [];
  const nameOf = (id = "") => items.find((e) => e.id === id)?.name ?? id;
  function submit(e: FormEvent) {
    e.preventDefault();
    create.mutate(
      { body: { name: name.trim() } },
      {
        onSuccess: (a) => {
          setCreated({ name: a.environment?.name ?? name, secret: a.admin_secret ?? "" });
          setName("");
        },
      },
    );
  }
  return (
    <>
      <ListStatus error={envs.error} empty={!!envs.data && items.length === 0} title="No environments to show." />
      {items.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Id</th>
              <th>Created by</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {items.map((e) => (
              <tr key={e.id}>
                <td>
                  {e.name}
                  {e.id === key?.environmentId && <div className="muted">the one you are in</div>}
                </td>
                <td>
                  <code>{e.id}</code>
                </td>
                <td>{e.parent_id ? nameOf(e.parent_id) : <span className="muted">seghub (first environment)</span>}</td>
                <td>{when(e.create_time)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={submit} className="card">
        <GuardedFieldset op="AdminService_CreateEnvironment" legend="Create an environment">
          <p className="hint">
            A new, empty environment (say, staging) with its own segments, connections and keys. Its first admin key is shown once.
          </p>
          <Field label="Environment name" errors={byField["name"]}>
            <input type="text" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
          </Field>
          <ErrorNotice error={create.error} extra={unplaced} />
          <button type="submit" className="primary" disabled={create.isPending}>
            Create environment
          </button>
        </GuardedFieldset>
        {created && (
          <>
            <KeySecretOnce title={`The admin key of ${created.name}`} secret={created.secret} onDone={() => setCreated(undefined)} />
            <p>
              <button
                type="button"
                onClick={() => {
                  setSignInError(undefined);
                  signIn(created.secret).catch(setSignInError);
                }}
              >
                Add this key to this tab and switch to {created.name}
              </button>
            </p>
            <ErrorNotice error={signInError} />
          </>
        )}
      </form>
    </>
  );
}
