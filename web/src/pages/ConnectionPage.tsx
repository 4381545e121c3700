import { useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { placeFieldErrors } from "../api/fieldErrors";
import {
  useConnection,
  useDeleteConnection,
  useDestinationTypes,
  useUpdateConnection,
  webhookURL,
} from "../api/integrations";
import type { Connection, DestinationType } from "../api/schema.gen";
import { recurringInUse, useSyncs } from "../api/segments";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { ConnectionStatus } from "../components/ConnectionStatus";
import { CopyButton } from "../components/CopyButton";
import { ErrorNotice } from "../components/ErrorNotice";
import { Field } from "../components/Field";
import { GuardedButton, GuardedFieldset, RoleNotice } from "../components/Guarded";
import { IdentityPropertySelect } from "../components/IdentityPropertySelect";
import { ListStatus } from "../components/ListStatus";
import { enumWord, every, fieldLabel, recurringUsage, when } from "../format";

/** One connection: status, identity property, send-events, credentials, its syncs, delete. */
export default function ConnectionPage() {
  const { connectionId = "" } = useParams();
  const conn = useConnection(connectionId);
  const types = useDestinationTypes();
  const c = conn.data?.connection;
  const type = types.data?.types?.find((t) => t.type === c?.type);
  if (conn.error) {
    return (
      <section>
        <p>
          <Link to="/integrations">← Integrations</Link>
        </p>
        <ErrorNotice error={conn.error} />
      </section>
    );
  }
  if (!c) return <p className="loading">Loading…</p>;
  return (
    <section>
      <p>
        <Link to="/integrations">← Integrations</Link>
      </p>
      <h1>{c.name}</h1>
      <RoleNotice>You can read this connection; changing its settings or credentials, or deleting it, needs an admin key.</RoleNotice>
      <dl className="facts">
        <dt>Tool</dt>
        <dd>{type?.display_name ?? c.type}</dd>
        <dt>Status</dt>
        <dd>
          <ConnectionStatus connection={c} detail />
        </dd>
        {c.account && (
          <>
            <dt>Account</dt>
            <dd>{c.account}</dd>
          </>
        )}
        <dt>Connected</dt>
        <dd>{when(c.create_time)}</dd>
        {c.webhook_path && (
          <>
            <dt>Webhook URL</dt>
            <dd>
              <code>{webhookURL(c)}</code> <CopyButton text={webhookURL(c)} label="Copy webhook URL" />
              <br />
              <small className="muted">The signing secret was shown once when this connection was made.</small>
            </dd>
          </>
        )}
      </dl>
      {type && <SettingsForm key={c.update_time} connection={c} type={type} />}
      {type && (type.credential_fields?.length ?? 0) > 0 && <RotateCredentials connection={c} type={type} />}
      {type?.segments_out && <ConnectionSyncs connection={c} type={type} />}
      <DeleteConnection connection={c} />
    </section>
  );
}

function SettingsForm({ connection, type }: { connection: Connection; type: DestinationType }) {
  const [identity, setIdentity] = useState(connection.settings?.identity_property ?? "");
  const [sendEvents, setSendEvents] = useState(!!connection.settings?.send_events);
  const [prefix, setPrefix] = useState(connection.settings?.property_prefix ?? "");
  const update = useUpdateConnection();
  const { byField, unplaced } = placeFieldErrors(update.error, [
    "settings.identity_property",
    "settings.send_events",
    "settings.property_prefix",
    "settings",
  ]);
  if (!type.segments_out && !type.events_in) return null;
  function submit(e: FormEvent) {
    e.preventDefault();
    update.mutate({
      path: { connection_id: connection.connection_id ?? "" },
      body: { settings: { identity_property: identity, send_events: sendEvents, property_prefix: type.default_property_prefix ? prefix : undefined } },
    });
  }
  return (
    <form onSubmit={submit}>
      <h2>Settings</h2>
      <GuardedFieldset op="ConnectorService_UpdateConnection">
        {type.segments_out && (
          <Field
            label="Identity property"
            hint={`The user property whose values equal ${type.display_name}'s user ids; users without it are counted as unmatched and never sent.`}
            errors={byField["settings.identity_property"]}
          >
            <IdentityPropertySelect value={identity} onChange={setIdentity} suggested={type.default_identity_property} />
          </Field>
        )}
        {type.default_property_prefix && (
          <Field
            label="Property prefix"
            hint={`The label before a segment's name in ${type.display_name} ("${prefix || type.default_property_prefix} Trial users"). A sync keeps the prefix it first synced with; start it over to take a new one.`}
            errors={byField["settings.property_prefix"]}
          >
            <input value={prefix} maxLength={32} placeholder={type.default_property_prefix} onChange={(e) => setPrefix(e.target.value)} />
          </Field>
        )}
        {type.events_in && (
          <div className="field">
            <label className="toggle">
              <input type="checkbox" role="switch" checked={sendEvents} onChange={(e) => setSendEvents(e.target.checked)} />
              Send {type.display_name} events to analytics
            </label>
            <small className="hint">When off, events this tool posts are not relayed into analytics.</small>
            {byField["settings.send_events"] && <small className="field-error">{byField["settings.send_events"].join(" ")}</small>}
          </div>
        )}
        <ErrorNotice error={update.error} extra={unplaced} />
        {update.isSuccess && <p role="status">Saved.</p>}
        <button type="submit" className="primary" disabled={update.isPending}>
          Save settings
        </button>
      </GuardedFieldset>
    </form>
  );
}

function RotateCredentials({ connection, type }: { connection: Connection; type: DestinationType }) {
  const fields = type.credential_fields ?? [];
  const [creds, setCreds] = useState<Record<string, string>>({});
  const update = useUpdateConnection();
  const { byField, unplaced } = placeFieldErrors(update.error, [...fields.map((f) => `credentials.${f}`), "credentials"]);
  function submit(e: FormEvent) {
    e.preventDefault();
    update.mutate(
      { path: { connection_id: connection.connection_id ?? "" }, body: { credentials: creds } },
      { onSuccess: () => setCreds({}) },
    );
  }
  return (
    <form onSubmit={submit}>
      <h2>Rotate credentials</h2>
      <GuardedFieldset op="ConnectorService_UpdateConnection">
        <p className="hint">New credentials are checked with {type.display_name} before they replace the old ones.</p>
        {fields.map((f) => (
          <Field key={f} label={`New ${fieldLabel(f)}`} errors={byField[`credentials.${f}`]}>
            <input
              type={/key|secret|token/.test(f) ? "password" : "text"}
              autoComplete="off"
              value={creds[f] ?? ""}
              onChange={(e) => setCreds({ ...creds, [f]: e.target.value })}
            />
          </Field>
        ))}
        <ErrorNotice error={update.error} extra={unplaced} />
        {update.isSuccess && <p role="status">Credentials replaced.</p>}
        <button type="submit" disabled={update.isPending}>
          Replace credentials
        </button>
      </GuardedFieldset>
    </form>
  );
}

function ConnectionSyncs({ connection, type }: { connection: Connection; type: DestinationType }) {
  const all = useSyncs();
  const mine = (all.data ?? []).filter((s) => s.connection_id === connection.connection_id);
  return (
    <>
      <h2>Segments synced here</h2>
      <p data-testid="recurring-usage">
        {recurringUsage(
          connection.recurring_syncs_in_use ?? recurringInUse(all.data ?? [], connection.type ?? ""),
          connection.recurring_syncs_limit ?? type.recurring_limit ?? 0,
          type,
        )}{" "}
        in this environment, across all its {type.display_name} connections (one-time syncs are unlimited).
      </p>
      <ListStatus
        error={all.error}
        empty={!!all.data && mine.length === 0}
        title="No segment syncs to this connection yet."
      >
        <p>
          Open a segment under <Link to="/segments">Segments</Link> and turn on its {connection.name} toggle.
        </p>
      </ListStatus>
      {mine.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Segment (name frozen at first sync)</th>
              <th>Schedule</th>
              <th>Last sync</th>
            </tr>
          </thead>
          <tbody>
            {mine.map((s) => (
              <tr key={s.sync_id}>
                <td>
                  <Link to={`/segments/${s.segment_id}`}>{s.frozen_display_name || s.segment_id}</Link>
                  {!s.enabled && <span className="muted"> (off)</span>}
                </td>
                <td>{s.schedule === "SYNC_SCHEDULE_RECURRING" ? `Recurring, ${every(s.interval)}` : "One-time"}</td>
                <td>
                  {when(s.last_synced_time)} {enumWord(s.last_status, "SYNC_RUN_STATUS_")}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function DeleteConnection({ connection }: { connection: Connection }) {
  const [open, setOpen] = useState(false);
  const del = useDeleteConnection();
  const navigate = useNavigate();
  return (
    <>
      <h2>Delete</h2>
      <GuardedButton op="ConnectorService_DeleteConnection" className="danger" onClick={() => setOpen(true)}>
        Delete connection…
      </GuardedButton>
      <ConfirmDialog
        title={`Delete ${connection.name}?`}
        open={open}
        onClose={() => setOpen(false)}
        error={del.error}
        confirmLabel="Delete"
        pending={del.isPending}
        onConfirm={() => del.mutate({ path: { connection_id: connection.connection_id ?? "" } }, { onSuccess: () => navigate("/integrations") })}
      >
        <p>Its syncs stop and its stored credentials are erased. What the tool already holds stays there.</p>
      </ConfirmDialog>
    </>
  );
}
