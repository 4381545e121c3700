import { useId } from "react";
import { useUserProperties } from "../api/integrations";
import type { PropertyType, TargetableSegment } from "../api/schema.gen";
import { count } from "../format";
import {
  newCondition,
  newGroup,
  operatorWords,
  operatorsFor,
  type AudienceDraft,
  type ConditionDraft,
  type ConditionKind,
  type GroupDraft,
  type ValueType,
} from "./audienceDraft";
import { Field } from "./Field";

type Errors = Readonly<Record<string, readonly string[]>>;

/**
 * The Targeting tab's audience: "Everyone", or "Custom" with AND / OR groups
 * of conditions ("Add condition" → "Segment", "Not in segment", "User property").
 * Only public, non-empty segments are offered, as the integration documents require.
 */
export function AudienceBuilder({
  draft,
  onChange,
  segments,
  errors = {},
}: {
  draft: AudienceDraft;
  onChange: (d: AudienceDraft) => void;
  segments: readonly TargetableSegment[];
  errors?: Errors;
}) {
  return (
    <div className="audience">
      <Field
        label="Audience"
        hint={draft.everyone ? "Every user may see it." : "Only users matching the conditions below may see it."}
        errors={errors["audience"]}
      >
        <select value={draft.everyone ? "everyone" : "custom"} onChange={(e) => onChange({ ...draft, everyone: e.target.value === "everyone" })}>
          <option value="everyone">Everyone</option>
          <option value="custom">Custom</option>
        </select>
      </Field>
      {!draft.everyone && (
        <GroupEditor
          group={draft.match}
          field="audience.match"
          depth={1}
          segments={segments}
          errors={errors}
          onChange={(match) => onChange({ ...draft, match })}
        />
      )}
    </div>
  );
}

function GroupEditor({
  group,
  field,
  depth,
  segments,
  errors,
  onChange,
  onRemove,
}: {
  group: GroupDraft;
  field: string;
  depth: number;
  segments: readonly TargetableSegment[];
  errors: Errors;
  onChange: (g: GroupDraft) => void;
  onRemove?: () => void;
}) {
  const title = depth === 1 ? "Conditions" : `Group of conditions (level ${depth})`;
  const groupErrors = errors[field] ?? [];
  const combinatorErrors = errors[`${field}.combinator`];
  return (
    <fieldset className={depth === 1 ? "audience-group" : "audience-group nested"}>
      <legend>{title}</legend>
      <Field label="Users must match" errors={combinatorErrors}>
        <select value={group.combinator} onChange={(e) => onChange({ ...group, combinator: e.target.value as "AND" | "OR" })}>
          <option value="AND">all of these (AND)</option>
          <option value="OR">any of these (OR)</option>
        </select>
      </Field>
      {groupErrors.length > 0 && (
        <p className="field-error" role="alert">
          {groupErrors.join(" ")}
        </p>
      )}
      {group.conditions.length > 0 && (
        <ol className="conditions">
          {group.conditions.map((c, i) => (
            <ConditionRow
              key={c.id}
              n={i + 1}
              condition={c}
              field={`${field}.conditions[${i}]`}
              segments={segments}
              errors={errors}
              onChange={(nc) => onChange({ ...group, conditions: group.conditions.map((x) => (x.id === c.id ? nc : x)) })}
              onRemove={() => onChange({ ...group, conditions: group.conditions.filter((x) => x.id !== c.id) })}
            />
          ))}
        </ol>
      )}
      {group.groups.map((g, i) => (
        <GroupEditor
          key={g.id}
          group={g}
          field={`${field}.groups[${i}]`}
          depth={depth + 1}
          segments={segments}
          errors={errors}
          onChange={(ng) => onChange({ ...group, groups: group.groups.map((x) => (x.id === g.id ? ng : x)) })}
          onRemove={() => onChange({ ...group, groups: group.groups.filter((x) => x.id !== g.id) })}
        />
      ))}
      <div className="actions">
        <button type="button" onClick={() => onChange({ ...group, conditions: [...group.conditions, newCondition()] })}>
          Add condition
        </button>
        {depth < 8 && (
          <button
            type="button"
            onClick={() => onChange({ ...group, groups: [...group.groups, { ...newGroup(group.combinator === "AND" ? "OR" : "AND"), conditions: [newCondition()] }] })}
          >
            Add group
          </button>
        )}
        {onRemove && (
          <button type="button" className="danger" onClick={onRemove}>
            Remove this group
          </button>
        )}
      </div>
    </fieldset>
  );
}

export const valueTypeOf: Partial<Record<PropertyType, ValueType>> = {
  PROPERTY_TYPE_STRING: "string",
  PROPERTY_TYPE_NUMBER: "number",
  PROPERTY_TYPE_BOOL: "bool",
  PROPERTY_TYPE_TIMESTAMP: "timestamp",
};

export const valueTypeWords: Record<ValueType, string> = { string: "text", number: "number", bool: "true / false", timestamp: "date and time" };

function ConditionRow({
  n,
  condition: c,
  field,
  segments,
  errors,
  onChange,
  onRemove,
}: {
  n: number;
  condition: ConditionDraft;
  field: string;
  segments: readonly TargetableSegment[];
  errors: Errors;
  onChange: (c: ConditionDraft) => void;
  onRemove: () => void;
}) {
  const own = errors[field] ?? [];
  const valueErrors = [
    ...(errors[`${field}.value`] ?? []),
    ...(errors[`${field}.string_value`] ?? []),
    ...(errors[`${field}.number_value`] ?? []),
    ...(errors[`${field}.timestamp_value`] ?? []),
  ];
  const known = segments.some((s) => s.segment_id === c.segmentId);
  return (
    <li className="condition">
      <fieldset>
        <legend className="sr-only">Condition {n}</legend>
        <div className="condition-fields">
          <Field label="Condition">
            <select value={c.kind} onChange={(e) => onChange({ ...c, kind: e.target.value as ConditionKind })}>
              <option value="in_segment">Segment</option>
              <option value="not_in_segment">Not in segment</option>
              <option value="property">User property</option>
            </select>
          </Field>
          {c.kind !== "property" ? (
            <Field label="Segment" errors={errors[`${field}.segment_id`]}>
              <select value={c.segmentId} onChange={(e) => onChange({ ...c, segmentId: e.target.value })}>
                <option value="">{segments.length ? "Choose a segment" : "No public, non-empty segment yet"}</option>
                {c.segmentId && !known && <option value={c.segmentId}>{c.segmentId} (no longer public, or empty)</option>}
                {segments.map((s) => (
                  <option key={s.segment_id} value={s.segment_id}>
                    {s.name} — {count(s.member_count)} members
                  </option>
                ))}
              </select>
            </Field>
          ) : (
            <>
              <PropertyFields
                condition={c}
                field={field}
                errors={errors}
                valueErrors={valueErrors}
                operators={operatorsFor}
                words={operatorWords}
                equals="OPERATOR_EQUALS"
                exists="OPERATOR_EXISTS"
                onChange={onChange}
              />
            </>
          )}
          <button type="button" className="remove" aria-label={`Remove condition ${n}`} onClick={onRemove}>
            Remove
          </button>
        </div>
        {own.length > 0 && (
          <p className="field-error" role="alert">
            {own.join(" ")}
          </p>
        )}
      </fieldset>
    </li>
  );
}

/**
 * The property, value type, comparison and value fields of a user-property
 * condition, shared by the audience and rule builders (each with its own
 * operator set).
 */
export function PropertyFields<Op extends string, C extends { property: string; valueType: ValueType; operator: Op; value: string }>({
  condition: c,
  field,
  errors,
  valueErrors,
  operators,
  words,
  equals,
  exists,
  onChange,
}: {
  condition: C;
  field: string;
  errors: Errors;
  valueErrors: readonly string[] | undefined;
  operators: Record<ValueType, readonly Op[]>;
  words: Record<Op, string>;
  equals: Op;
  exists: Op;
  onChange: (c: C) => void;
}) {
  const listId = useId();
  const props = useUserProperties();
  return (
    <>
      <Field label="Property" errors={errors[`${field}.property`]}>
        <input
          list={listId}
          value={c.property}
          autoComplete="off"
          onChange={(e) => {
            const name = e.target.value;
            const held = props.data?.properties?.find((p) => p.name === name);
            const vt = held?.type ? valueTypeOf[held.type] : undefined;
            const next = { ...c, property: name, ...(vt ? { valueType: vt } : {}) };
            if (!operators[next.valueType].includes(next.operator)) next.operator = equals;
            onChange(next);
          }}
        />
      </Field>
      <datalist id={listId}>
        {(props.data?.properties ?? []).map((p) => (
          <option key={`${p.name}/${p.type}`} value={p.name}>
            {count(p.user_count)} users
          </option>
        ))}
      </datalist>
      <Field label="Value type">
        <select
          value={c.valueType}
          onChange={(e) => {
            const valueType = e.target.value as ValueType;
            const operator = operators[valueType].includes(c.operator) ? c.operator : equals;
            onChange({ ...c, valueType, operator, value: valueType === "bool" ? "true" : "" });
          }}
        >
          {(Object.keys(valueTypeWords) as ValueType[]).map((t) => (
            <option key={t} value={t}>
              {valueTypeWords[t]}
            </option>
          ))}
        </select>
      </Field>
      <Field label="Comparison" errors={errors[`${field}.operator`]}>
        <select value={c.operator} onChange={(e) => onChange({ ...c, operator: e.target.value as Op })}>
          {operators[c.valueType].map((op) => (
            <option key={op} value={op}>
              {words[op]}
            </option>
          ))}
        </select>
      </Field>
      {c.operator !== exists && (
        <Field label="Value" errors={valueErrors}>
          <ValueInput condition={c} onChange={(value) => onChange({ ...c, value })} />
        </Field>
      )}
    </>
  );
}

/** The value control for a condition's type; times are entered in local time and kept in UTC. */
export function ValueInput({
  condition: c,
  onChange,
  ...rest
}: {
  condition: { valueType: ValueType; value: string };
  onChange: (v: string) => void;
  id?: string;
  "aria-describedby"?: string;
  "aria-invalid"?: boolean;
}) {
  switch (c.valueType) {
    case "bool":
      return (
        <select value={c.value || "true"} onChange={(e) => onChange(e.target.value)} {...rest}>
          <option value="true">true</option>
          <option value="false">false</option>
        </select>
      );
    case "number":
      return <input type="number" step="any" value={c.value} onChange={(e) => onChange(e.target.value)} {...rest} />;
    case "timestamp":
      return (
        <input
          type="datetime-local"
          value={isoToLocal(c.value)}
          onChange={(e) => onChange(e.target.value ? new Date(e.target.value).toISOString() : "")}
          {...rest}
        />
      );
    default:
      return <input type="text" value={c.value} onChange={(e) => onChange(e.target.value)} {...rest} />;
  }
}

/** "2026-01-31T10:00:00Z" → "2026-01-31T11:00" in a UTC+1 browser. */
export function isoToLocal(iso: string): string {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return "";
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
