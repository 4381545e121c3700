import { useState } from "react";
import { Link, useParams } from "react-router";
import { useConnections, useDestinationTypes } from "../api/integrations";
import { isComputed, recurringInUse, syncFor, useSegment, useSyncs, useUpdateSegment } from "../api/segments";
import { ComputeStatus, ComputedBadge } from "../components/ComputeStatus";
import { ErrorNotice } from "../components/ErrorNotice";
import { GuardedButton, RoleNotice } from "../components/Guarded";
import { ListStatus } from "../components/ListStatus";
import { RuleEditForm } from "../components/RuleEditForm";
import { describeRule } from "../components/ruleDraft";
import { SegmentMembers } from "../components/SegmentMembers";
import { SegmentRename } from "../components/SegmentRename";
import { SegmentSyncToggle } from "../components/SegmentSyncToggle";
import { VisibilityBadge } from "../components/VisibilityBadge";
import { count, when } from "../format";

/** A segment and its Integrations section: one sync toggle per connected tool. */
export default function SegmentPage() {
  const { segmentId = "" } = useParams();
  const seg = useSegment(segmentId);
  const connections = useConnections();
  const types = useDestinationTypes();
  const syncs = useSyncs();
  const update = useUpdateSegment();
  const [editing, setEditing] = useState(false);
  const s = seg.data?.segment;
  if (seg.error) {
    return (
      <section>
        <p>
          <Link to="/segments">← Segments</Link>
        </p>
        <ErrorNotice error={seg.error} />
      </section>
    );
  }
  if (!s) return <p className="loading">Loading…</p>;
  const typeOf = (t?: string) => types.data?.types?.find((x) => x.type === t);
  const destinations = (connections.data ?? []).filter((c) => typeOf(c.type)?.segments_out);
  const isPrivate = s.visibility === "VISIBILITY_PRIVATE";
  const makePublic = () => update.mutate({ path: { segment_id: segmentId }, body: { visibility: "VISIBILITY_PUBLIC" } });
  return (
    <section>
      <p>
        <Link to="/segments">← Segments</Link>
      </p>
      <h1>{s.name}</h1>
      {s.description && <p>{s.description}</p>}
      <SegmentRename key={s.version} segment={s} />
      <dl className="facts">
        <dt>Visibility</dt>
        <dd>
          <VisibilityBadge visibility={s.visibility} />
        </dd>
        <dt>Kind</dt>
        <dd>{isComputed(s) ? <ComputedBadge /> : "List"}</dd>
        {isComputed(s) && (
          <>
            <dt>Rule</dt>
            <dd className="rule-words">{describeRule(s.rule)}</dd>
            <dt>Membership</dt>
            <dd>
              <ComputeStatus segment={s} />
            </dd>
          </>
        )}
        <dt>Members</dt>
        <dd>{count(s.member_count)}</dd>
        <dt>Updated</dt>
        <dd>{when(s.update_time)}</dd>
        {s.external_id && (
          <>
            <dt>From the analytics tool</dt>
            <dd>{s.external_id}</dd>
          </>
        )}
      </dl>
      {isComputed(s) &&
        (editing ? (
          <RuleEditForm segment={s} onDone={() => setEditing(false)} />
        ) : (
          <GuardedButton op="SegmentSyncService_UpdateSegment" onClick={() => setEditing(true)}>
            Edit rule…
          </GuardedButton>
        ))}

      <SegmentMembers segment={s} />

      <h2>Integrations</h2>
      <RoleNotice>You can read each sync, its run history and run a dry run; turning syncs on or off and “Sync now” need an admin key.</RoleNotice>
      <p className="hint">
        {isPrivate
          ? "This segment is private: only public segments sync to tools."
          : "Each tool has its own toggle. Only admins can turn syncs on or off, or sync now."}{" "}
        {Number(s.member_count ?? 0) === 0 && "An empty segment is not offered in tools' segment builders until it has a member."}
      </p>
      {isPrivate && (
        <p>
          <GuardedButton op="SegmentSyncService_UpdateSegment" onClick={makePublic} disabled={update.isPending}>
            Make this segment public
          </GuardedButton>
        </p>
      )}
      <ErrorNotice error={update.error} />
      <ListStatus
        error={connections.error ?? types.error ?? syncs.error}
        empty={!!connections.data && destinations.length === 0}
        title="No tool that receives segments is connected."
      >
        <p>
          Connect Appcues, CommandBar or AB Tasty under <Link to="/integrations">Integrations</Link>, then come back to turn
          on its toggle.
        </p>
      </ListStatus>
      {destinations.length > 0 && syncs.data && (
        <div className="card">
          {destinations.map((c) => (
            <SegmentSyncToggle
              key={c.connection_id}
              segment={s}
              connection={c}
              type={typeOf(c.type)!}
              listed={syncFor(syncs.data, s.segment_id ?? "", c.connection_id ?? "")}
              recurringUsed={c.recurring_syncs_in_use ?? recurringInUse(syncs.data, c.type ?? "")}
            />
          ))}
        </div>
      )}
    </section>
  );
}
