import { useEffect, useState } from "react";
import { Link } from "react-router";
import { useConnections, useDestinationTypes } from "../api/integrations";
import { isComputed, segmentsPageSize, useSegmentsPage } from "../api/segments";
import { ComputeStatus, ComputedBadge } from "../components/ComputeStatus";
import { describeRule } from "../components/ruleDraft";
import { Field } from "../components/Field";
import { ListStatus } from "../components/ListStatus";
import { ListPager, usePageTokens } from "../components/Pager";
import { VisibilityBadge } from "../components/VisibilityBadge";
import { count, when } from "../format";

/** Segments, searched on the server and read a page at a time. */
export default function SegmentsPage() {
  const [input, setInput] = useState("");
  const [search, setSearch] = useState("");
  const pages = usePageTokens();
  // Search once typing pauses; a new search starts at page 1.
  useEffect(() => {
    const t = setTimeout(() => {
      setSearch(input.trim());
      pages.reset();
    }, 250);
    return () => clearTimeout(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [input]);
  // "Targetable by <connection>": segments at least one member of which
  // holds that connection's identity property.
  const [targetConn, setTargetConn] = useState("");
  const connections = useConnections();
  const types = useDestinationTypes();
  const destinations = (connections.data ?? []).flatMap((c) => {
    const t = types.data?.types?.find((x) => x.type === c.type);
    if (!t?.segments_out) return [];
    return [{ id: c.connection_id ?? "", name: c.name ?? "", prop: c.settings?.identity_property || t.default_identity_property || "user_id" }];
  });
  const target = destinations.find((d) => d.id === targetConn);
  const list = useSegmentsPage(search, pages.token, target?.prop ?? "");
  const segments = list.data?.segments ?? [];
  return (
    <section>
      <div className="toolbar">
        <h1>Segments</h1>
        <Link className="button primary" to="/segments/new">
          New segment
        </Link>
      </div>
      <div className="toolbar">
        <Field label="Search segments by name">
          <input type="search" value={input} onChange={(e) => setInput(e.target.value)} placeholder="Trial users…" />
        </Field>
        {destinations.length > 0 && (
          <Field label="Targetable by">
            <select
              value={targetConn}
              onChange={(e) => {
                setTargetConn(e.target.value);
                pages.reset();
              }}
            >
              <option value="">Any tool</option>
              {destinations.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.name} (members with {d.prop})
                </option>
              ))}
            </select>
          </Field>
        )}
        {list.isFetching && <span className="muted" role="status">Loading…</span>}
      </div>
      <ListStatus
        error={list.error}
        empty={!!list.data && segments.length === 0 && pages.page === 1}
        title={
          target
            ? `No segment${search ? ` whose name contains “${search}”` : ""} has a member with ${target.prop}, so ${target.name} can target none.`
            : search
              ? `No segment name contains “${search}”.`
              : "No segments yet."
        }
      >
        {target ? (
          <p>Members get {target.prop} when the tool's tag identifies them; choose “Any tool” to see every segment.</p>
        ) : search ? (
          <p>Try a shorter search.</p>
        ) : (
          <p>
            Segments arrive from your analytics tool (connect a source under <Link to="/integrations">Integrations</Link>) or
            through the API: <code>POST /v1/segments</code>. <Link to="/segments/new">Create one here</Link>: a list, or a segment
            computed from what users do.
          </p>
        )}
      </ListStatus>
      {segments.length > 0 && (
        <table>
          <caption className="muted table-caption">
            {segmentsPageSize} a page, by name. Only public segments can be synced to tools.
          </caption>
          <thead>
            <tr>
              <th>Name</th>
              <th>Visibility</th>
              <th className="num">Members</th>
              <th>Updated</th>
            </tr>
          </thead>
          <tbody>
            {segments.map((s) => (
              <tr key={s.segment_id}>
                <td>
                  <Link to={`/segments/${s.segment_id}`}>{s.name}</Link> {isComputed(s) && <ComputedBadge />}
                  {s.description && <div className="muted">{s.description}</div>}
                  {isComputed(s) && <div className="muted rule-words">{describeRule(s.rule)}</div>}
                </td>
                <td>
                  <VisibilityBadge visibility={s.visibility} />
                </td>
                <td className="num">
                  {count(s.member_count)}
                  {isComputed(s) && s.compute_state !== "COMPUTE_STATE_LIVE" && (
                    <div>
                      <ComputeStatus segment={s} />
                    </div>
                  )}
                </td>
                <td>{when(s.update_time)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ListPager label="Segment pages" pages={pages} list={list} />
    </section>
  );
}
