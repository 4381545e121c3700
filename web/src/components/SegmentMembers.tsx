import { useEffect, useRef, useState } from "react";
import { placeFieldErrors } from "../api/fieldErrors";
import type { Segment } from "../api/schema.gen";
import { isComputed, useAddMembers, useMembers, useRemoveMembers } from "../api/segments";
import { count } from "../format";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedFieldset } from "./Guarded";

export const membersShown = 20;
const maxIds = 100_000;

/** "a, b\nc" → ["a", "b", "c"]: ids one a line or separated by commas. */
export function parseIds(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean))];
}

/**
 * A segment's first members and, for a list segment, adding or removing
 * members by id. A computed segment's members follow its rule, so it offers
 * no such controls and says why (the server refuses them: FailedPrecondition).
 */
export function SegmentMembers({ segment: s }: { segment: Segment }) {
  const id = s.segment_id ?? "";
  const members = useMembers(id, membersShown);
  const { refetch } = members;
  // The first page follows the segment: membership changes bump its version.
  const seen = useRef(s.version);
  useEffect(() => {
    if (seen.current === s.version) return;
    seen.current = s.version;
    void refetch();
  }, [s.version, refetch]);
  const ids = members.data?.user_ids ?? [];
  const total = Number(s.member_count ?? 0);
  return (
    <>
      <h2>Members</h2>
      <ErrorNotice error={members.error} />
      {ids.length > 0 ? (
        <>
          <p className="hint">{ids.length < total ? `The first ${ids.length} of ${count(total)}:` : `All ${count(total)}:`}</p>
          <ul className="tags sample" aria-label="Members">
            {ids.map((u) => (
              <li key={u} className="tag">
                {u}
              </li>
            ))}
          </ul>
        </>
      ) : (
        members.data && <p className="muted">No members yet.</p>
      )}
      {isComputed(s) ? (
        <p className="notice" role="note">
          Members of a computed segment follow its rule: they cannot be added, removed or replaced by hand. Edit the rule to change
          who is in it.
        </p>
      ) : (
        <MembersEditor segmentId={id} />
      )}
    </>
  );
}

function MembersEditor({ segmentId }: { segmentId: string }) {
  const [text, setText] = useState("");
  const [problem, setProblem] = useState("");
  const [done, setDone] = useState("");
  const add = useAddMembers();
  const remove = useRemoveMembers();
  const last = add.error ? add : remove;
  const server = placeFieldErrors(last.error, ["user_ids"]);
  const errors = [...(problem ? [problem] : []), ...(server.byField["user_ids"] ?? [])];

  function run(op: "add" | "remove") {
    const ids = parseIds(text);
    setDone("");
    add.reset();
    remove.reset();
    if (ids.length === 0) return setProblem("enter at least one user id");
    if (ids.length > maxIds) return setProblem(`at most ${maxIds.toLocaleString("en-US")} ids at a time`);
    setProblem("");
    const args = { path: { segment_id: segmentId }, body: { user_ids: ids } };
    if (op === "add") add.mutate(args, { onSuccess: (a) => (setText(""), setDone(`Added ${count(a.added)} of ${count(ids.length)}.`)) });
    else remove.mutate(args, { onSuccess: (a) => (setText(""), setDone(`Removed ${count(a.removed)} of ${count(ids.length)}.`)) });
  }

  return (
    <form onSubmit={(e) => e.preventDefault()} noValidate>
      <h3>Add or remove members</h3>
      <GuardedFieldset op="SegmentSyncService_AddMembers">
        <Field label="User ids" hint="One a line, or separated by commas. Unknown ids create users without properties." errors={errors}>
          <textarea rows={3} value={text} onChange={(e) => setText(e.target.value)} />
        </Field>
        <ErrorNotice error={last.error} extra={server.unplaced} />
        {done && <p role="status">{done}</p>}
        <div className="actions">
          <button type="button" onClick={() => run("add")} disabled={add.isPending || remove.isPending}>
            Add members
          </button>
          <button type="button" onClick={() => run("remove")} disabled={add.isPending || remove.isPending}>
            Remove members
          </button>
        </div>
      </GuardedFieldset>
    </form>
  );
}
