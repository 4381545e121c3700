import { useDryRun } from "../api/segments";
import { count } from "../format";
import { ErrorNotice } from "./ErrorNotice";
import { GuardedButton } from "./Guarded";

/** What the next run would add and remove, computed without sending anything. */
export function DryRunPanel({ syncId }: { syncId: string }) {
  const dry = useDryRun();
  const r = dry.data;
  return (
    <div>
      <GuardedButton
        op="SegmentSyncService_DryRun"
        disabled={dry.isPending}
        onClick={() => dry.mutate({ path: { sync_id: syncId }, body: { sample_size: 10 } })}
      >
        {dry.isPending ? "Computing…" : "Dry run"}
      </GuardedButton>
      <ErrorNotice error={dry.error} />
      {r && (
        <div className="card" role="region" aria-label="Dry run result">
          <p>
            The next run would add <strong>{count(r.to_add)}</strong>, remove <strong>{count(r.to_remove)}</strong> and retry{" "}
            <strong>{count(r.to_retry)}</strong>; <strong>{count(r.unmatched)}</strong> members have no value for the identity
            property and would not be sent. Nothing was sent.
          </p>
          <Sample title="Would add (sample)" ids={r.sample_adds} />
          <Sample title="Would remove (sample)" ids={r.sample_removes} />
        </div>
      )}
    </div>
  );
}

function Sample({ title, ids }: { title: string; ids: string[] | undefined }) {
  if (!ids?.length) return null;
  return (
    <>
      <h3>{title}</h3>
      <ul className="tags">
        {ids.map((id) => (
          <li key={id} className="tag">
            {id}
          </li>
        ))}
      </ul>
    </>
  );
}
