import { useState, type FormEvent } from "react";
import { placeFieldErrors } from "../api/fieldErrors";
import type { Segment } from "../api/schema.gen";
import { useUpdateSegment } from "../api/segments";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedFieldset } from "./Guarded";

/** Renames a segment; tools it already syncs to keep the name frozen at first sync. */
export function SegmentRename({ segment }: { segment: Segment }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState(segment.name ?? "");
  const update = useUpdateSegment();
  const { byField, unplaced } = placeFieldErrors(update.error, ["name"]);
  if (!open) {
    return (
      <button type="button" onClick={() => setOpen(true)}>
        Rename…
      </button>
    );
  }
  function submit(e: FormEvent) {
    e.preventDefault();
    update.mutate({ path: { segment_id: segment.segment_id ?? "" }, body: { name } }, { onSuccess: () => setOpen(false) });
  }
  return (
    <form onSubmit={submit}>
      <GuardedFieldset op="SegmentSyncService_UpdateSegment">
        <Field
          label="Segment name"
          hint="Tools this segment already syncs to keep the name frozen at their first sync."
          errors={byField["name"]}
        >
          <input value={name} onChange={(e) => setName(e.target.value)} autoFocus />
        </Field>
        <ErrorNotice error={update.error} extra={unplaced} />
        <div className="actions">
          <button type="submit" className="primary" disabled={update.isPending}>
            Save name
          </button>
          <button type="button" onClick={() => setOpen(false)}>
            Cancel
          </button>
        </div>
      </GuardedFieldset>
    </form>
  );
}
