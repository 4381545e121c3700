import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { placeFieldErrors } from "../api/fieldErrors";
import type { Experience, ExperienceType } from "../api/schema.gen";
import { singularOf, useCreateExperience, useTargetableSegments, useUpdateExperience } from "../api/targeting";
import { AudienceBuilder } from "./AudienceBuilder";
import { audienceFields, fromAudience, toAudience, validateAudience, type AudienceDraft } from "./audienceDraft";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedFieldset } from "./Guarded";

/**
 * Creating or editing a product tour, checklist or experience: its name,
 * whether it is live, and (the Targeting tab) its audience. The draft is
 * checked here first, with the server's own rules; what the server still
 * refuses appears on the same fields in its words.
 */
export function ExperienceForm({
  experience,
  type,
  onSaved,
}: {
  experience?: Experience;
  type: ExperienceType;
  onSaved: (e: Experience) => void;
}) {
  const [name, setName] = useState(experience?.name ?? "");
  const [enabled, setEnabled] = useState(experience?.enabled ?? true);
  const [draft, setDraft] = useState<AudienceDraft>(() => fromAudience(experience?.audience));
  // Once a save was tried, the draft is re-checked as it changes, so marks clear when fixed.
  const [tried, setTried] = useState(false);
  const segments = useTargetableSegments();
  const create = useCreateExperience();
  const update = useUpdateExperience();
  const save = experience ? update : create;
  const fields = ["name", "type", ...audienceFields(draft)];
  const server = placeFieldErrors(save.error, fields);
  const checked = tried ? check(name, draft) : {};
  const errors: Record<string, string[]> = { ...server.byField };
  for (const [f, ms] of Object.entries(checked)) errors[f] = [...(errors[f] ?? []), ...ms];
  const noun = singularOf(type);

  function submit(e: FormEvent) {
    e.preventDefault();
    setTried(true);
    if (Object.keys(check(name, draft)).length) return;
    const audience = toAudience(draft);
    if (experience) {
      update.mutate(
        { path: { experience_id: experience.experience_id ?? "" }, body: { name: name.trim(), enabled, audience } },
        { onSuccess: (a) => a.experience && onSaved(a.experience) },
      );
    } else {
      create.mutate(
        { body: { name: name.trim(), type, audience, disabled: !enabled } },
        { onSuccess: (a) => a.experience && onSaved(a.experience) },
      );
    }
  }

  return (
    <form onSubmit={submit} noValidate>
      <GuardedFieldset op={experience ? "TargetingService_UpdateExperience" : "TargetingService_CreateExperience"}>
        <Field label="Name" errors={errors["name"]}>
          <input type="text" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" />
        </Field>
        <div className="field">
          <label className="toggle">
            <input type="checkbox" role="switch" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} />
            Live
          </label>
          <small className="hint">When off, no user is eligible for this {noun}, whatever its audience.</small>
        </div>
        <h2>Targeting</h2>
        <p className="hint">
          Segments offered here are the public, non-empty ones. To target another segment, make it public on its page under{" "}
          <Link to="/segments">Segments</Link>.
        </p>
        <ErrorNotice error={segments.error} />
        <AudienceBuilder draft={draft} onChange={setDraft} segments={segments.data ?? []} errors={errors} />
        {Object.keys(checked).length > 0 && (
          <p className="field-error" role="alert">
            Fix the fields marked above, then save again.
          </p>
        )}
        <ErrorNotice error={save.error} extra={server.unplaced} />
        {save.isSuccess && <p role="status">Saved.</p>}
        <div className="actions">
          <button type="submit" className="primary" disabled={save.isPending}>
            {experience ? "Save changes" : `Create ${noun}`}
          </button>
        </div>
      </GuardedFieldset>
    </form>
  );
}

function check(name: string, draft: AudienceDraft): Record<string, string[]> {
  const errs = validateAudience(draft);
  if (!name.trim()) errs["name"] = ["give it a name"];
  return errs;
}
