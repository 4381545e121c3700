import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router";
import { placeFieldErrors } from "../api/fieldErrors";
import { useCreateConnection, useStartAuthorization, webhookURL } from "../api/integrations";
import type { Connection, DestinationType } from "../api/schema.gen";
import { fieldLabel } from "../format";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedFieldset } from "./Guarded";
import { IdentityPropertySelect } from "./IdentityPropertySelect";
import { SecretOnce } from "./SecretOnce";
import { useAccess } from "../session/SessionContext";

// Where to find each credential, in the destination's own words.
const credentialHints: Record<string, Record<string, string>> = {
  appcues: {
    account_id: "Appcues: Settings > Account > Account ID.",
    api_key: "Appcues: Settings > Account > API key.",
    api_secret: "The secret shown with the API key in Appcues.",
  },
  abtasty: {
    account_identifier: "AB Tasty: your account identifier.",
    client_id: "AB Tasty: Integrations > Public API credentials.",
    client_secret: "Shown once when AB Tasty created the credentials.",
  },
  webhook: { url: "Where seghub posts segment changes (https)." },
  analytics: { app_id: "The analytics project's app id." },
};

const secretish = /key|secret|token|password/;

/**
 * Connect one destination type: by API key or client credentials (checked by
 * the server before it is saved), by OAuth (the browser goes to the tool and
 * comes back through /oauth/callback), or as an inbound source (the webhook
 * URL and signing secret are shown once).
 */
export function ConnectForm({ type, onDone }: { type: DestinationType; onDone: () => void }) {
  const oauth = type.auth_method === "AUTH_METHOD_OAUTH2";
  const op = oauth ? "ConnectorService_StartAuthorization" : "ConnectorService_CreateConnection";
  const fields = type.credential_fields ?? [];
  const [name, setName] = useState(type.display_name ?? type.type ?? "");
  const [account, setAccount] = useState("");
  const [creds, setCreds] = useState<Record<string, string>>({});
  const [identity, setIdentity] = useState(type.segments_out ? (type.default_identity_property ?? "") : "");
  const [sendEvents, setSendEvents] = useState(!!type.events_in);
  const [prefix, setPrefix] = useState(type.default_property_prefix ?? "");
  const create = useCreateConnection();
  const authorize = useStartAuthorization();
  const [created, setCreated] = useState<{ connection: Connection; secret: string } | null>(null);
  const navigate = useNavigate();
  const access = useAccess();
  const error = oauth ? authorize.error : create.error;
  const { byField, unplaced } = placeFieldErrors(error, [
    "name",
    "account",
    "settings.identity_property",
    "settings.send_events",
    "settings.property_prefix",
    ...fields.map((f) => `credentials.${f}`),
    "credentials",
  ]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const settings = {
      identity_property: identity || undefined,
      send_events: type.events_in ? sendEvents : undefined,
      property_prefix: (type.default_property_prefix && prefix) || undefined,
    };
    if (oauth) {
      const res = await authorize.mutateAsync({ body: { type: type.type, name, account: account || undefined, settings } }).catch(() => null);
      // The tool asks the user to pick the environment and "Allow", then
      // sends the browser back to seghub's /oauth/callback.
      if (res?.authorize_url) window.location.assign(res.authorize_url);
      return;
    }
    const res = await create.mutateAsync({ body: { type: type.type, name, credentials: creds, settings } }).catch(() => null);
    if (!res?.connection) return;
    if (res.signing_secret) setCreated({ connection: res.connection, secret: res.signing_secret });
    else navigate(`/integrations/connections/${res.connection.connection_id}`);
  }

  if (created) {
    return (
      <div>
        <p>
          <strong>{created.connection.name}</strong> is connected.
        </p>
        <SecretOnce url={webhookURL(created.connection)} secret={created.secret} />
        <div className="dialog-actions">
          <button type="button" onClick={() => navigate(`/integrations/connections/${created.connection.connection_id}`)}>
            Open the connection
          </button>
          <button type="button" className="primary" onClick={onDone}>
            Done
          </button>
        </div>
      </div>
    );
  }

  // The fieldset already disables its controls; the submit button says so itself too.
  const busy = create.isPending || authorize.isPending || !access.may(op);
  return (
    <form onSubmit={submit} noValidate>
      <GuardedFieldset op={op}>
        <Field label="Name" hint="How this connection is listed in seghub." errors={byField["name"]}>
          <input value={name} onChange={(e) => setName(e.target.value)} required />
        </Field>
        {oauth && (
          <Field
            label={`${type.display_name} organisation`}
            hint={`The ${type.display_name} organisation to connect. Next, ${type.display_name} asks you to pick the environment and press “Allow”, then sends you back here.`}
            errors={byField["account"]}
          >
            <input value={account} onChange={(e) => setAccount(e.target.value)} />
          </Field>
        )}
        {fields.map((f) => (
          <Field key={f} label={fieldLabel(f)} hint={credentialHints[type.type ?? ""]?.[f]} errors={byField[`credentials.${f}`]}>
            <input
              type={secretish.test(f) ? "password" : "text"}
              autoComplete="off"
              spellCheck={false}
              value={creds[f] ?? ""}
              onChange={(e) => setCreds({ ...creds, [f]: e.target.value })}
            />
          </Field>
        ))}
        {byField["credentials"] && <p className="field-error">{byField["credentials"].join(" ")}</p>}
        {type.segments_out && (
          <Field
            label="Identity property"
            hint={`The user property whose values equal ${type.display_name}'s user ids. Syncs to this connection use it unless they choose another.`}
            errors={byField["settings.identity_property"]}
          >
            <IdentityPropertySelect value={identity} onChange={setIdentity} suggested={type.default_identity_property} />
          </Field>
        )}
        {type.default_property_prefix && (
          <Field
            label="Property prefix"
            hint={`The label before a segment's name in ${type.display_name} ("${prefix || type.default_property_prefix} Trial users"); "[Heap]" keeps rules built on Heap's integration. Each sync keeps the prefix of its first run.`}
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
          </div>
        )}
        <ErrorNotice error={error} extra={unplaced} />
        <div className="dialog-actions">
          <button type="button" onClick={onDone}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            {create.isPending || authorize.isPending ? "Checking…" : oauth ? `Continue to ${type.display_name}` : type.segments_in && !type.segments_out ? "Create source" : "Connect"}
          </button>
        </div>
      </GuardedFieldset>
    </form>
  );
}
