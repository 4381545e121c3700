import { useId, useState, type FormEvent } from "react";
import { placeFieldErrors } from "../api/fieldErrors";
import type { Segment, Visibility } from "../api/schema.gen";
import { useCreateSegment } from "../api/segments";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedFieldset } from "./Guarded";
import { mergeErrors, RuleSection } from "./RuleSection";
import { newRule, ruleFields, toRule, validateRule, type GroupNode } from "./ruleDraft";

/**
 * Creating a segment: a list (members pushed in through the API, a source
 * such as Heap, or added on its page) or a computed one whose members follow
 * a rule over user properties and events, kept live by seghub.
 */
export function SegmentForm({ onCreated }: { onCreated: (s: Segment) => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [visibility, setVisibility] = useState<Visibility>("VISIBILITY_PUBLIC");
  const [kind, setKind] = useState<"list" | "computed">("list");
  const [rule, setRule] = useState<GroupNode>(newRule);
  const [tried, setTried] = useState(false);
  const create = useCreateSegment();
  const kindHint = useId();
  const computed = kind === "computed";
  const fields = ["name", "description", "visibility", ...(computed ? ruleFields(rule) : [])];
  const server = placeFieldErrors(create.error, fields);
  const checked = tried ? check(name, computed, rule) : {};
  const errors = mergeErrors(server.byField, checked);

  function submit(e: FormEvent) {
    e.preventDefault();
    setTried(true);
    if (Object.keys(check(name, computed, rule)).length) return;
    create.mutate(
      { body: { name: name.trim(), description: description.trim() || undefined, visibility, ...(computed ? { rule: toRule(rule) } : {}) } },
      { onSuccess: (a) => a.segment && onCreated(a.segment) },
    );
  }

  return (
    <form onSubmit={submit} noValidate>
      <GuardedFieldset op="SegmentSyncService_CreateSegment">
        <Field label="Name" errors={errors["name"]} hint="Tools show this name; it is frozen in a tool at its first sync.">
          <input type="text" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
        </Field>
        <Field label="Description" errors={errors["description"]}>
          <input type="text" value={description} onChange={(e) => setDescription(e.target.value)} autoComplete="off" />
        </Field>
        <Field label="Visibility" errors={errors["visibility"]} hint="Only public segments sync to tools and can be targeted.">
          <select value={visibility} onChange={(e) => setVisibility(e.target.value as Visibility)}>
            <option value="VISIBILITY_PUBLIC">Public</option>
            <option value="VISIBILITY_PRIVATE">Private</option>
          </select>
        </Field>
        <fieldset className="field kind" aria-describedby={kindHint}>
          <legend>Kind</legend>
          <label className="toggle">
            <input type="radio" name="kind" value="list" checked={!computed} onChange={() => setKind("list")} />
            List
          </label>
          <label className="toggle">
            <input type="radio" name="kind" value="computed" checked={computed} onChange={() => setKind("computed")} />
            Computed
          </label>
          <small id={kindHint} className="hint">
            {computed
              ? "Members follow the rule below, computed from user properties and the events seghub relays, and kept live. They cannot be added or removed by hand."
              : "Members are added through the API, by a source such as Heap, or by hand on the segment's page."}
          </small>
        </fieldset>
        {computed && (
          <>
            <h2>Rule</h2>
            <RuleSection rule={rule} onChange={setRule} errors={errors} />
          </>
        )}
        {Object.keys(checked).length > 0 && (
          <p className="field-error" role="alert">
            Fix the fields marked above, then create again.
          </p>
        )}
        <ErrorNotice error={create.error} extra={server.unplaced} />
        <div className="actions">
          <button type="submit" className="primary" disabled={create.isPending}>
            Create segment
          </button>
        </div>
      </GuardedFieldset>
    </form>
  );
}

function check(name: string, computed: boolean, rule: GroupNode): Record<string, string[]> {
  const errs = computed ? validateRule(rule) : {};
  if (!name.trim()) errs["name"] = ["give it a name"];
  return errs;
}
