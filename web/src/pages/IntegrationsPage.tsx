import { useState } from "react";
import { Link } from "react-router";
import { useConnections, useDestinationTypes } from "../api/integrations";
import type { DestinationType } from "../api/schema.gen";
import { ConnectForm } from "../components/ConnectForm";
import { ConnectionStatus } from "../components/ConnectionStatus";
import { Dialog } from "../components/Dialog";
import { Field } from "../components/Field";
import { GuardedButton, RoleNotice } from "../components/Guarded";
import { ListStatus } from "../components/ListStatus";
import { days, every } from "../format";

const authWords: Record<string, string> = {
  AUTH_METHOD_API_KEY: "API key",
  AUTH_METHOD_OAUTH2: "OAuth (sign in to the tool and Allow)",
  AUTH_METHOD_CLIENT_CREDENTIALS: "Client id and secret",
  AUTH_METHOD_SIGNING_SECRET: "Signed webhooks",
};

export function capabilities(t: DestinationType): string[] {
  const out: string[] = [];
  if (t.segments_out) out.push("Segments out");
  if (t.segments_in) out.push("Segments in");
  if (t.events_in) out.push("Events in");
  if (t.events_out) out.push("Events out");
  return out;
}

/** The destination directory: a card per tool with "Connect", and the connections made. */
export default function IntegrationsPage() {
  const types = useDestinationTypes();
  const connections = useConnections();
  const [search, setSearch] = useState("");
  const [connecting, setConnecting] = useState<DestinationType | null>(null);
  const q = search.trim().toLowerCase();
  const shown = (types.data?.types ?? []).filter(
    (t) => !q || [t.display_name, t.type, ...capabilities(t)].some((s) => s?.toLowerCase().includes(q)),
  );
  const nameOf = (type?: string) => types.data?.types?.find((t) => t.type === type)?.display_name ?? type;

  return (
    <section>
      <h1>Integrations</h1>
      <RoleNotice>You can browse the directory and read connections; connecting, changing or deleting them needs an admin key.</RoleNotice>

      <h2>Connected</h2>
      <ListStatus
        error={connections.error}
        empty={!!connections.data && connections.data.length === 0}
        title="Nothing is connected yet."
      >
        <p>Pick a tool from the directory below and press Connect.</p>
      </ListStatus>
      {connections.data && connections.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Connection</th>
              <th>Tool</th>
              <th>Status</th>
              <th>Identity property</th>
            </tr>
          </thead>
          <tbody>
            {connections.data.map((c) => (
              <tr key={c.connection_id}>
                <td>
                  <Link to={`/integrations/connections/${c.connection_id}`}>{c.name}</Link>
                </td>
                <td>{nameOf(c.type)}</td>
                <td>
                  <ConnectionStatus connection={c} />
                </td>
                <td>{c.settings?.identity_property || <span className="muted">—</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>Directory</h2>
      <div className="toolbar">
        <Field label="Search the directory">
          <input type="search" value={search} onChange={(e) => setSearch(e.target.value)} placeholder="Appcues, events in…" />
        </Field>
      </div>
      <ListStatus error={types.error} empty={!!types.data && shown.length === 0} title={`No tool matches “${search}”.`}>Clear the search to see every tool.</ListStatus>
      <ul className="cards" aria-label="Destination directory">
        {shown.map((t) => (
          <li key={t.type} className="card" aria-labelledby={`dt-${t.type}`}>
            <h3 id={`dt-${t.type}`}>{t.display_name}</h3>
            <ul className="tags" aria-label="Capabilities">
              {capabilities(t).map((c) => (
                <li key={c} className="tag">
                  {c}
                </li>
              ))}
            </ul>
            <dl className="facts">
              <dt>Connect with</dt>
              <dd>{authWords[t.auth_method ?? ""] ?? "—"}</dd>
              {t.segments_out && (
                <>
                  <dt>Recurring sync</dt>
                  <dd>
                    {every(t.default_interval)}, at most {t.recurring_limit} at a time
                  </dd>
                </>
              )}
              {t.retention && t.retention !== "0s" && (
                <>
                  <dt>Keeps data</dt>
                  <dd>{days(t.retention)} (seghub re-sends before it lapses)</dd>
                </>
              )}
            </dl>
            <GuardedButton
              op={t.auth_method === "AUTH_METHOD_OAUTH2" ? "ConnectorService_StartAuthorization" : "ConnectorService_CreateConnection"}
              className="primary"
              onClick={() => setConnecting(t)}
              aria-label={`Connect ${t.display_name}`}
            >
              Connect
            </GuardedButton>
          </li>
        ))}
      </ul>
      <Dialog title={`Connect ${connecting?.display_name ?? ""}`} open={!!connecting} onClose={() => setConnecting(null)}>
        {connecting && <ConnectForm key={connecting.type} type={connecting} onDone={() => setConnecting(null)} />}
      </Dialog>
    </section>
  );
}
