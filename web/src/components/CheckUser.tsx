import { useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import type { ConditionGroup } from "../api/schema.gen";
import { experiencePath, singularOf, useAllExperiences, useEvaluations, useSegmentNames, useUserSegments } from "../api/targeting";
import { conditionAt, describeCondition } from "./audienceDraft";
import { EmptyState } from "./EmptyState";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { ListStatus } from "./ListStatus";

/**
 * "Check a user": the segments a user is in and, for each experience,
 * whether they are eligible and the condition that decided, with the index
 * version each answer came from.
 */
export function CheckUser() {
  const [params, setParams] = useSearchParams();
  const userId = params.get("user") ?? "";
  const [input, setInput] = useState(userId);
  function submit(e: FormEvent) {
    e.preventDefault();
    const u = input.trim();
    setParams(u ? { user: u } : {});
  }
  return (
    <>
      <h2>Check a user</h2>
      <form onSubmit={submit} className="toolbar">
        <Field label="User id" hint="The id your product and analytics know the user by.">
          <input type="text" value={input} onChange={(e) => setInput(e.target.value)} autoComplete="off" />
        </Field>
        <button type="submit" className="primary" disabled={!input.trim()}>
          Check
        </button>
      </form>
      {userId && <Verdicts userId={userId} />}
    </>
  );
}

const maxChecked = 100;

function Verdicts({ userId }: { userId: string }) {
  const segs = useUserSegments(userId);
  const exps = useAllExperiences();
  // One request per experience: the first maxChecked are checked, the rest named below.
  const all = exps.data ?? [];
  const list = all.slice(0, maxChecked);
  const evals = useEvaluations(userId, list.map((e) => e.experience_id ?? ""));
  const segmentIds = segs.data?.segment_ids ?? [];
  // The user's segments and every segment an audience names, by name.
  const named = new Set(segmentIds);
  const walk = (g?: ConditionGroup) => {
    g?.conditions?.forEach((c) => c.segment_id && named.add(c.segment_id));
    g?.groups?.forEach(walk);
  };
  list.forEach((e) => walk(e.audience?.match));
  const names = useSegmentNames([...named]);
  const segmentName = (id: string) => names.get(id);
  return (
    <>
      <h3>Segments {userId} is in</h3>
      <ErrorNotice error={segs.error} />
      {segs.data && (
        <p className="muted" aria-live="polite">
          Answered from index version {segs.data.index_version ?? "0"}.
        </p>
      )}
      {segs.data && segmentIds.length === 0 && (
        <EmptyState title={`${userId} is in no segment.`}>
          <p>An id seghub has never seen is in no segment; check its spelling, or that the user was synced from analytics.</p>
        </EmptyState>
      )}
      {segmentIds.length > 0 && (
        <ul className="tags" aria-label={`Segments of ${userId}`}>
          {segmentIds.map((id) => (
            <li key={id} className="tag">
              <Link to={`/segments/${id}`}>{segmentName(id) ?? id}</Link>
            </li>
          ))}
        </ul>
      )}
      <h3>Experiences</h3>
      <ListStatus
        error={exps.error}
        empty={!!exps.data && list.length === 0}
        title="No experiences yet."
      >
        <p>
          <Link to="/targeting/tours/new">Create a product tour</Link> or a checklist with an audience, then check the user again.
        </p>
      </ListStatus>
      {list.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Experience</th>
              <th>Eligible</th>
              <th>Decided by</th>
              <th className="num">Index version</th>
            </tr>
          </thead>
          <tbody>
            {list.map((e, i) => {
              const q = evals[i];
              const v = q?.data;
              const cond = v?.decided_by ? conditionAt(e.audience, v.decided_by) : undefined;
              return (
                <tr key={e.experience_id}>
                  <td>
                    <Link to={experiencePath(e)}>{e.name}</Link>
                    <div className="muted">{singularOf(e.type)}</div>
                  </td>
                  <td>
                    {q?.error ? (
                      <ErrorNotice error={q.error} />
                    ) : !v ? (
                      <span className="muted">Checking…</span>
                    ) : v.eligible ? (
                      <strong className="status-ok">Eligible</strong>
                    ) : (
                      <strong className="status-bad">Not eligible</strong>
                    )}
                  </td>
                  <td>
                    {v && (
                      <>
                        {cond ? describeCondition(cond, segmentName) : v.decided_by}
                        {v.reason && <div className="muted">{v.reason}</div>}
                      </>
                    )}
                  </td>
                  <td className="num">{v?.index_version ?? ""}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {all.length > maxChecked && (
        <p className="muted">
          Checked the first {maxChecked} of {all.length} experiences (by name). For one experience, call{" "}
          <code>GET /v1/experiences/&lbrace;id&rbrace;/users/{userId}</code>.
        </p>
      )}
    </>
  );
}
