import { useState } from "react";
import { placeFieldErrors } from "../api/fieldErrors";
import { usePreviewRule } from "../api/segments";
import { count } from "../format";
import { ErrorNotice } from "./ErrorNotice";
import { RuleBuilder } from "./RuleBuilder";
import { ruleFields, toRule, validateRule, type GroupNode } from "./ruleDraft";

export const previewSampleSize = 10;

/** Merges field → messages maps, each message once. */
export function mergeErrors(...maps: Readonly<Record<string, readonly string[]>>[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const m of maps) {
    for (const [f, ms] of Object.entries(m)) out[f] = [...new Set([...(out[f] ?? []), ...ms])];
  }
  return out;
}

/**
 * A computed segment's rule with its preview: "Preview" checks the rule as
 * the server would, then asks the server how many users it holds for now and
 * for a sample, saving nothing. errors are the form's (its own checks and
 * the server's answer to saving), keyed by field path.
 */
export function RuleSection({
  rule,
  onChange,
  errors,
}: {
  rule: GroupNode;
  onChange: (g: GroupNode) => void;
  errors: Readonly<Record<string, readonly string[]>>;
}) {
  const preview = usePreviewRule();
  const [previewTried, setPreviewTried] = useState(false);
  const [previewed, setPreviewed] = useState("");
  const placed = placeFieldErrors(preview.error, ruleFields(rule));
  const all = mergeErrors(errors, previewTried ? validateRule(rule) : {}, placed.byField);
  const current = JSON.stringify(toRule(rule));

  function run() {
    setPreviewTried(true);
    if (Object.keys(validateRule(rule)).length) {
      preview.reset();
      return;
    }
    setPreviewed(current);
    preview.mutate({ body: { rule: toRule(rule), sample_size: previewSampleSize } });
  }

  const result = preview.data;
  const sample = result?.sample_user_ids ?? [];
  const total = Number(result?.member_count ?? 0);
  return (
    <div className="rule-section">
      <RuleBuilder rule={rule} onChange={onChange} errors={all} />
      <div className="preview">
        <button type="button" onClick={run} disabled={preview.isPending}>
          {preview.isPending ? "Previewing…" : "Preview"}
        </button>
        <span className="hint">Counts the users this rule holds for now; nothing is saved.</span>
        {previewTried && Object.keys(validateRule(rule)).length > 0 && (
          <p className="field-error" role="alert">
            Fix the fields marked above, then preview again.
          </p>
        )}
        <ErrorNotice error={preview.error} extra={placed.unplaced} />
        {result && !preview.isPending && (
          <div className="preview-result" role="status" aria-label="Preview">
            <p>
              <strong>{count(total)}</strong> {total === 1 ? "user matches" : "users match"} this rule now.
              {previewed !== current && <span className="muted"> The rule changed since: preview again.</span>}
            </p>
            {sample.length > 0 && (
              <>
                <p className="hint">
                  {sample.length < total ? `The first ${sample.length}:` : total === 1 ? "It is:" : "They are:"}
                </p>
                <ul className="tags sample">
                  {sample.map((id) => (
                    <li key={id} className="tag">
                      {id}
                    </li>
                  ))}
                </ul>
              </>
            )}
          </div>
        )}
      </div>
    </div>
  );
}
