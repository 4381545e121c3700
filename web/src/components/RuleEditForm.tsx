import { useState, type FormEvent } from "react";
import { placeFieldErrors } from "../api/fieldErrors";
import type { Segment } from "../api/schema.gen";
import { useUpdateSegment } from "../api/segments";
import { ErrorNotice } from "./ErrorNotice";
import { GuardedFieldset } from "./Guarded";
import { mergeErrors, RuleSection } from "./RuleSection";
import { fromRule, ruleFields, toRule, validateRule, type GroupNode } from "./ruleDraft";

/** Changes a computed segment's rule; the server then computes its membership again. */
export function RuleEditForm({ segment, onDone }: { segment: Segment; onDone: () => void }) {
  const [rule, setRule] = useState<GroupNode>(() => fromRule(segment.rule));
  const [tried, setTried] = useState(false);
  const update = useUpdateSegment();
  const server = placeFieldErrors(update.error, ruleFields(rule));
  const checked = tried ? validateRule(rule) : {};
  const errors = mergeErrors(server.byField, checked);

  function submit(e: FormEvent) {
    e.preventDefault();
    setTried(true);
    if (Object.keys(validateRule(rule)).length) return;
    update.mutate({ path: { segment_id: segment.segment_id ?? "" }, body: { rule: toRule(rule) } }, { onSuccess: onDone });
  }

  return (
    <form onSubmit={submit} noValidate className="card">
      <GuardedFieldset op="SegmentSyncService_UpdateSegment" legend="Edit the rule">
        <p className="hint">Saving computes the membership again from the retained events; the segment shows its progress until it is live.</p>
        <RuleSection rule={rule} onChange={setRule} errors={errors} />
        {Object.keys(checked).length > 0 && (
          <p className="field-error" role="alert">
            Fix the fields marked above, then save again.
          </p>
        )}
        <ErrorNotice error={update.error} extra={server.unplaced} />
        <div className="actions">
          <button type="submit" className="primary" disabled={update.isPending}>
            Save rule
          </button>
          <button type="button" onClick={onDone}>
            Cancel
          </button>
        </div>
      </GuardedFieldset>
    </form>
  );
}
