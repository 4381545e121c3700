import { useEffect, useState } from "react";
import { Link } from "react-router";
import { segmentsPageSize, useSegmentsPage } from "../api/segments";
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
  const list = useSegmentsPage(search, pages.token);
  const segments = list.data?.segments ?? [];
  return (
    <section>
      <h1>Segments</h1>
      <div className="toolbar">
        <Field label="Search segments by name">
          <input type="search" value={input} onChange={(e) => setInput(e.target.value)} placeholder="Trial users…" />
        </Field>
        {list.isFetching && <span className="muted" role="status">Loading…</span>}
      </div>
      <ListStatus
        error={list.error}
        empty={!!list.data && segments.length === 0 && pages.page === 1}
        title={search ? `No segment name contains “${search}”.` : "No segments yet."}
      >
        {search ? (
          <p>Try a shorter search.</p>
        ) : (
          <p>
            Segments arrive from your analytics tool (connect a source under <Link to="/integrations">Integrations</Link>) or
            through the API: <code>POST /v1/segments</code>.
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
                  <Link to={`/segments/${s.segment_id}`}>{s.name}</Link>
                  {s.description && <div className="muted">{s.description}</div>}
                </td>
                <td>
                  <VisibilityBadge visibility={s.visibility} />
                </td>
                <td className="num">{count(s.member_count)}</td>
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
