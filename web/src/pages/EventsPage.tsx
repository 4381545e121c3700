import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { useCreateRoute, useDeleteRoute, useEventSchemas, useRoutes, useSinks } from "../api/events";
import { placeFieldErrors } from "../api/fieldErrors";
import { useConnections, useDestinationTypes } from "../api/integrations";
import type { Connection, EventSchema, Route } from "../api/schema.gen";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { DeadLetters } from "../components/DeadLetters";
import { EmptyState } from "../components/EmptyState";
import { ErrorNotice } from "../components/ErrorNotice";
import { Field } from "../components/Field";
import { GuardedButton, GuardedFieldset, RoleNotice } from "../components/Guarded";
import { ListStatus } from "../components/ListStatus";
import { count, when } from "../format";

/** Events the tools emit: where they go (routes, sinks), what failed (dead letters), and each source's schema. */
export default function EventsPage() {
  const connections = useConnections();
  const types = useDestinationTypes();
  const schemas = useEventSchemas();
  const conns = connections.data ?? [];
  // A sink is a connection whose tool takes events: an analytics track API or a destination's.
  const sinkTypes = new Set((types.data?.types ?? []).filter((t) => t.events_out).map((t) => t.type));
  const sinkConnections = conns.filter((c) => sinkTypes.has(c.type));
  const name = (id = "") => conns.find((c) => c.connection_id === id)?.name ?? id;
  return (
    <section>
      <h1>Events</h1>
      <p className="hint">
        Events that Appcues, CommandBar and the API send in are checked against their source's schema, stored, and delivered to
        each sink a route sends them to.
      </p>
      <RoleNotice>You can watch sinks, read routes, dead letters and schemas; adding or deleting routes and replaying dead letters need an admin key.</RoleNotice>
      <ErrorNotice error={connections.error} />
      <h2>Sinks</h2>
      <Sinks name={name} />
      <h2>Routes</h2>
      <RouteList name={name} />
      <RouteForm sinks={sinkConnections} schemas={schemas.data?.schemas ?? []} />
      <h2>Dead letters</h2>
      <DeadLetters connections={sinkConnections.length ? sinkConnections : conns} />
      <h2>Sources and their events</h2>
      <ErrorNotice error={schemas.error} />
      <EventSchemas schemas={schemas.data?.schemas ?? []} loading={schemas.isLoading} connections={conns} />
    </section>
  );
}

/** Each sink's backlog and counters, refetched every pollMs. */
export function Sinks({ name, pollMs = 3000 }: { name: (id?: string) => string; pollMs?: number }) {
  const sinks = useSinks(pollMs);
  const items = sinks.data?.sinks ?? [];
  return (
    <>
      <ListStatus
        error={sinks.error}
        empty={!!sinks.data && items.length === 0}
        title="No sink yet."
      >
        <p>Add a route below: it sends events to an analytics or destination connection, which then appears here.</p>
      </ListStatus>
      {items.length > 0 && (
        <table aria-describedby="sinks-live">
          <caption id="sinks-live" className="muted table-caption">
            Live: refreshed every few seconds.
          </caption>
          <thead>
            <tr>
              <th>Sink</th>
              <th className="num">Backlog</th>
              <th className="num">Delivered</th>
              <th className="num">Retrying users</th>
              <th className="num">Dead letters</th>
              <th>Last delivery</th>
              <th>Last error</th>
            </tr>
          </thead>
          <tbody>
            {items.map((s) => (
              <tr key={s.connection_id}>
                <td>
                  <Link to={`/integrations/connections/${s.connection_id}`}>{name(s.connection_id)}</Link>
                  <div className="muted">{s.type}</div>
                </td>
                <td className="num">{count(s.backlog)}</td>
                <td className="num">{count(s.delivered)}</td>
                <td className={(s.retrying_users ?? 0) > 0 ? "num status-warn" : "num"}>{count(s.retrying_users)}</td>
                <td className={Number(s.dead_letters ?? 0) > 0 ? "num status-bad" : "num"}>{count(s.dead_letters)}</td>
                <td>{when(s.last_delivery_time)}</td>
                <td>{s.last_error ? <span className="status-bad">{s.last_error}</span> : <span className="muted">none</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

const listOrAll = (xs: readonly string[] | undefined, all: string) => (xs?.length ? xs.join(", ") : all);

function RouteList({ name }: { name: (id?: string) => string }) {
  const routes = useRoutes();
  const [deleting, setDeleting] = useState<Route | undefined>();
  const del = useDeleteRoute();
  const items = routes.data ?? [];
  return (
    <>
      <ListStatus
        error={routes.error}
        empty={!!routes.data && items.length === 0}
        title="No route yet: events are stored but go nowhere."
      >
        <p>Add one below to send events to analytics or to a destination's track API.</p>
      </ListStatus>
      {items.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Sink</th>
              <th>Sources</th>
              <th>Events</th>
              <th>Created</th>
              <th>
                <span className="sr-only">Delete</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {items.map((r) => (
              <tr key={r.route_id}>
                <td>{name(r.connection_id)}</td>
                <td>{listOrAll(r.sources, "every source")}</td>
                <td>
                  {listOrAll(r.event_names, "every event")}
                  {r.deliver_as && <span className="muted"> → delivered as “{r.deliver_as}”</span>}
                </td>
                <td>{when(r.create_time)}</td>
                <td>
                  <GuardedButton
                    op="EventRelayService_DeleteRoute"
                    className="danger"
                    aria-label={`Delete the route to ${name(r.connection_id)}`}
                    onClick={() => setDeleting(r)}
                  >
                    Delete…
                  </GuardedButton>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ConfirmDialog
        title="Delete this route?"
        open={!!deleting}
        onClose={() => setDeleting(undefined)}
        error={del.error}
        confirmLabel="Delete route"
        pending={del.isPending}
        onConfirm={() => del.mutate({ path: { route_id: deleting?.route_id ?? "" } }, { onSuccess: () => setDeleting(undefined) })}
      >
        <p>
          Events stop flowing to {name(deleting?.connection_id)} through it; a sink with no route left stops delivering. Events
          already delivered stay delivered.
        </p>
      </ConfirmDialog>
    </>
  );
}

export function RouteForm({ sinks, schemas }: { sinks: readonly Connection[]; schemas: readonly EventSchema[] }) {
  const [sink, setSink] = useState("");
  const [sources, setSources] = useState<string[]>([]);
  const [events, setEvents] = useState<string[]>([]);
  const [deliverAs, setDeliverAs] = useState("");
  const create = useCreateRoute();
  const { byField, unplaced } = placeFieldErrors(create.error, ["connection_id", "sources", "event_names", "deliver_as"]);
  const allSources = [...new Set([...schemas.map((s) => s.source ?? ""), "api"])].filter(Boolean);
  const offered = schemas.filter((s) => sources.length === 0 || sources.includes(s.source ?? ""));
  const toggle = (xs: string[], x: string, on: boolean) => (on ? [...xs, x] : xs.filter((y) => y !== x));
  function submit(e: FormEvent) {
    e.preventDefault();
    create.mutate(
      { body: { connection_id: sink, sources, event_names: events.filter((n) => offered.some((s) => s.name === n)), deliver_as: deliverAs } },
      {
        onSuccess: () => {
          setSources([]);
          setEvents([]);
          setDeliverAs("");
        },
      },
    );
  }
  return (
    <form onSubmit={submit} className="card">
      <GuardedFieldset op="EventRelayService_CreateRoute" legend="Add a route">
        <Field
          label="Send events to"
          hint={sinks.length ? "An analytics connection, or a destination with a track API." : undefined}
          errors={byField["connection_id"]}
        >
          <select value={sink} onChange={(e) => setSink(e.target.value)}>
            <option value="">{sinks.length ? "Choose a connection" : "No connection takes events yet"}</option>
            {sinks.map((c) => (
              <option key={c.connection_id} value={c.connection_id}>
                {c.name} ({c.type})
              </option>
            ))}
          </select>
        </Field>
        {sinks.length === 0 && (
          <p className="hint">
            Connect an analytics tool or a destination that takes events under <Link to="/integrations">Integrations</Link> first.
          </p>
        )}
        <fieldset className="field wide">
          <legend>Sources (none ticked: every source)</legend>
          <div className="checks">
            {allSources.map((s) => (
              <label key={s} className="toggle">
                <input type="checkbox" checked={sources.includes(s)} onChange={(e) => setSources(toggle(sources, s, e.target.checked))} />
                {s}
              </label>
            ))}
          </div>
          {byField["sources"] && <small className="field-error">{byField["sources"].join(" ")}</small>}
        </fieldset>
        <details className="field wide">
          <summary>
            Events: {events.length ? `${events.length} chosen` : "every event of those sources"} (open to route only some)
          </summary>
          <div className="checks" role="group" aria-label="Events to route">
            {offered.map((s) => (
              <label key={`${s.source}/${s.name}`} className="toggle">
                <input
                  type="checkbox"
                  checked={events.includes(s.name ?? "")}
                  onChange={(e) => setEvents(toggle(events, s.name ?? "", e.target.checked))}
                />
                {s.name} <span className="muted">({s.source})</span>
              </label>
            ))}
          </div>
        </details>
        {byField["event_names"] && <small className="field-error">{byField["event_names"].join(" ")}</small>}
        <Field
          label="Deliver as (optional)"
          hint={'Send these events under another name, like Appcues.track("any name"); empty keeps their own.'}
          errors={byField["deliver_as"]}
        >
          <input value={deliverAs} onChange={(e) => setDeliverAs(e.target.value)} maxLength={255} />
        </Field>
        <ErrorNotice error={create.error} extra={unplaced} />
        {create.isSuccess && <p role="status">Route added.</p>}
        <button type="submit" className="primary" disabled={create.isPending}>
          Add route
        </button>
      </GuardedFieldset>
    </form>
  );
}

function EventSchemas({
  schemas,
  loading,
  connections,
}: {
  schemas: readonly EventSchema[];
  loading: boolean;
  connections: readonly Connection[];
}) {
  const sources = [...new Set(schemas.map((s) => s.source ?? ""))];
  if (loading) return <p className="loading">Loading…</p>;
  if (sources.length === 0) return <EmptyState title="No event schemas.">{null}</EmptyState>;
  return (
    <>
      {sources.map((src) => (
        <details key={src} className="schema">
          <summary>
            <strong>{src}</strong> — {schemas.filter((s) => s.source === src).length} events
          </summary>
          <SourceConnections source={src} connections={connections} />
          <table>
            <thead>
              <tr>
                <th>Event (delivered as)</th>
                <th>Also accepted as</th>
                <th>Properties</th>
              </tr>
            </thead>
            <tbody>
              {schemas
                .filter((s) => s.source === src)
                .map((s) => (
                  <tr key={s.name}>
                    <td>{s.name}</td>
                    <td>{s.aliases?.length ? s.aliases.map((a) => <code key={a}>{a} </code>) : <span className="muted">—</span>}</td>
                    <td>
                      {s.properties?.length ? (
                        <ul className="props">
                          {s.properties.map((p) => (
                            <li key={p.name}>
                              {p.name}
                              {p.wire_name && p.wire_name !== p.name && <code> {p.wire_name}</code>}{" "}
                              <span className="muted">
                                {p.type}
                                {p.required ? ", required" : ""}
                              </span>
                            </li>
                          ))}
                        </ul>
                      ) : (
                        <span className="muted">none</span>
                      )}
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
        </details>
      ))}
    </>
  );
}

/** The connections a source's events arrive through, and whether each relays them (its send-events toggle). */
function SourceConnections({ source, connections }: { source: string; connections: readonly Connection[] }) {
  const mine = connections.filter((c) => c.type === source);
  if (mine.length === 0) {
    return (
      <p className="hint">
        No {source} connection yet: connect {source} under <Link to="/integrations">Integrations</Link> to receive its events.
      </p>
    );
  }
  return (
    <ul className="props">
      {mine.map((c) => (
        <li key={c.connection_id}>
          <Link to={`/integrations/connections/${c.connection_id}`}>{c.name}</Link>:{" "}
          {c.settings?.send_events ? "its events are relayed" : <span className="status-warn">send events is off; its events are not relayed</span>}
        </li>
      ))}
    </ul>
  );
}
