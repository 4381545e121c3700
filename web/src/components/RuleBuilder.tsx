import { useId } from "react";
import { useEventSchemas } from "../api/events";
import { isoToLocal, PropertyFields } from "./AudienceBuilder";
import { Field } from "./Field";
import {
  childPath,
  countWords,
  limits,
  newEventCondition,
  newFilter,
  newGroup,
  newPropertyCondition,
  operatorWords,
  operatorsFor,
  seenWords,
  sources,
  type CountOp,
  type EventNode,
  type FilterDraft,
  type FilterType,
  type GroupNode,
  type PropertyNode,
  type RuleNode,
  type SeenOp,
} from "./ruleDraft";

type Errors = Readonly<Record<string, readonly string[]>>;

/**
 * A computed segment's rule: a top-level "all" / "any" group of user property
 * conditions, event conditions and nested groups, each of which may be
 * negated. Errors are keyed by the server's field paths (see ruleDraft).
 */
export function RuleBuilder({ rule, onChange, errors = {} }: { rule: GroupNode; onChange: (g: GroupNode) => void; errors?: Errors }) {
  return (
    <div className="rule">
      <GroupEditor group={rule} field="rule" depth={1} errors={errors} onChange={onChange} />
      {(errors["rule"] ?? []).length > 0 && (
        <p className="field-error" role="alert">
          {errors["rule"]!.join(" ")}
        </p>
      )}
    </div>
  );
}

const kindWords = { property: "User property", event: "Event", group: "Group" } as const;

function GroupEditor({
  group,
  field,
  depth,
  errors,
  onChange,
}: {
  group: GroupNode;
  field: string;
  depth: number;
  errors: Errors;
  onChange: (g: GroupNode) => void;
}) {
  const own = [...(errors[field] ?? []), ...(errors[`${field}.${group.combinator}`] ?? [])];
  const set = (i: number, n: RuleNode) => onChange({ ...group, children: group.children.map((c, j) => (j === i ? n : c)) });
  const add = (n: RuleNode) => onChange({ ...group, children: [...group.children, n] });
  // A nested group sits one level down, two when negated (the not counts).
  const canNest = depth + 2 <= limits.depth;
  return (
    <div className="rule-group-body">
      <Field label={depth === 1 ? "Members match" : "Users in this group match"}>
        <select value={group.combinator} onChange={(e) => onChange({ ...group, combinator: e.target.value as "all" | "any" })}>
          <option value="all">all of these (AND)</option>
          <option value="any">any of these (OR)</option>
        </select>
      </Field>
      {own.length > 0 && (
        <p className="field-error" role="alert">
          {own.join(" ")}
        </p>
      )}
      {group.children.length > 0 && (
        <ol className="conditions">
          {group.children.map((c, i) => {
            const p = childPath(group, field, i);
            return (
              <li key={c.id} className="condition">
                <fieldset className={c.kind === "group" ? "audience-group nested" : "rule-condition"}>
                  <legend>
                    {kindWords[c.kind]}
                    {c.kind === "group" ? ` (level ${depth + 1})` : ` condition ${i + 1}`}
                  </legend>
                  <label className="toggle not-toggle">
                    <input type="checkbox" checked={c.negate} onChange={(e) => set(i, { ...c, negate: e.target.checked })} />
                    NOT: users for whom this does not hold
                  </label>
                  {c.kind === "group" && (
                    <GroupEditor group={c} field={p.inner} depth={depth + (c.negate ? 2 : 1)} errors={errors} onChange={(g) => set(i, g)} />
                  )}
                  {c.kind === "property" && <PropertyEditor node={c} field={`${p.inner}.property`} errors={errors} onChange={(n) => set(i, n)} />}
                  {c.kind === "event" && <EventEditor node={c} field={`${p.inner}.event`} errors={errors} onChange={(n) => set(i, n)} />}
                  <NodeErrors messages={nodeMessages(c, p, errors)} />
                  <button
                    type="button"
                    className="danger remove-node"
                    onClick={() => onChange({ ...group, children: group.children.filter((x) => x.id !== c.id) })}
                  >
                    Remove {c.kind === "group" ? "this group" : `condition ${i + 1}`}
                  </button>
                </fieldset>
              </li>
            );
          })}
        </ol>
      )}
      <div className="actions">
        <button type="button" onClick={() => add(newEventCondition())}>
          Add event condition
        </button>
        <button type="button" onClick={() => add(newPropertyCondition())}>
          Add property condition
        </button>
        {canNest && (
          <button type="button" onClick={() => add(newGroup(group.combinator === "all" ? "any" : "all", [newEventCondition()]))}>
            Add group
          </button>
        )}
      </div>
    </div>
  );
}

/**
 * Violations on a child as a whole: at its place in the group, on its NOT
 * wrapper, or on the property condition itself. A group shows its own (at
 * inner) and an event editor its own, so those are left to them.
 */
function nodeMessages(c: RuleNode, p: { field: string; inner: string }, errors: Errors): string[] {
  const negated = p.field !== p.inner;
  return [
    ...(negated || c.kind !== "group" ? (errors[p.field] ?? []) : []),
    ...(negated && c.kind !== "group" ? (errors[p.inner] ?? []) : []),
    ...(c.kind === "property" ? (errors[`${p.inner}.property`] ?? []) : []),
  ];
}

function NodeErrors({ messages }: { messages: readonly string[] }) {
  if (!messages.length) return null;
  return (
    <p className="field-error" role="alert">
      {messages.join(" ")}
    </p>
  );
}

function PropertyEditor({ node: c, field, errors, onChange }: { node: PropertyNode; field: string; errors: Errors; onChange: (n: PropertyNode) => void }) {
  return (
    <div className="condition-fields">
      <PropertyFields
        condition={c}
        field={field}
        errors={errors}
        valueErrors={errors[`${field}.value`]}
        operators={operatorsFor}
        words={operatorWords}
        equals="PROPERTY_OPERATOR_EQUALS"
        exists="PROPERTY_OPERATOR_EXISTS"
        onChange={onChange}
      />
    </div>
  );
}

const filterTypeWords: Record<FilterType, string> = { string: "text", number: "number", bool: "true / false" };

function EventEditor({ node: c, field, errors, onChange }: { node: EventNode; field: string; errors: Errors; onChange: (n: EventNode) => void }) {
  const listId = useId();
  const schemas = useEventSchemas();
  const names = (schemas.data?.schemas ?? []).filter((s) => s.source === c.source);
  const schema = names.find((s) => s.name === c.name || s.aliases?.includes(c.name));
  const setFilter = (i: number, f: FilterDraft) => onChange({ ...c, where: c.where.map((x, j) => (j === i ? f : x)) });
  return (
    <div className="event-condition">
      <div className="condition-fields">
        <Field label="Source" errors={errors[`${field}.source`]}>
          <select value={c.source} onChange={(e) => onChange({ ...c, source: e.target.value })}>
            {!(c.source in sources) && <option value={c.source}>{c.source || "Choose a source"}</option>}
            {Object.entries(sources).map(([v, label]) => (
              <option key={v} value={v}>
                {label}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Event" errors={errors[`${field}.name`]} hint={c.source === "api" ? "The name sent to the track API." : undefined}>
          <input list={listId} value={c.name} autoComplete="off" placeholder="Flow Completed" onChange={(e) => onChange({ ...c, name: e.target.value })} />
        </Field>
        <datalist id={listId}>
          {names.map((s) => (
            <option key={s.name} value={s.name} />
          ))}
        </datalist>
      </div>
      {c.where.length > 0 && (
        <ul className="filters" aria-label="Event property filters">
          {c.where.map((f, i) => {
            const w = `${field}.where[${i}]`;
            const valueErrors = [
              ...(errors[w] ?? []),
              ...(errors[`${w}.string_value`] ?? []),
              ...(errors[`${w}.number_value`] ?? []),
              ...(errors[`${w}.bool_value`] ?? []),
            ];
            return (
              <li key={f.id} className="condition-fields">
                <Field label={`Event property ${i + 1}`} errors={errors[`${w}.property`]}>
                  <input
                    list={`${listId}-props`}
                    value={f.property}
                    autoComplete="off"
                    onChange={(e) => onChange({ ...c, where: c.where.map((x, j) => (j === i ? { ...f, property: e.target.value } : x)) })}
                  />
                </Field>
                <Field label="Type">
                  <select
                    value={f.valueType}
                    onChange={(e) => {
                      const valueType = e.target.value as FilterType;
                      setFilter(i, { ...f, valueType, value: valueType === "bool" ? "true" : "" });
                    }}
                  >
                    {(Object.keys(filterTypeWords) as FilterType[]).map((t) => (
                      <option key={t} value={t}>
                        {filterTypeWords[t]}
                      </option>
                    ))}
                  </select>
                </Field>
                <Field label="Equals" errors={valueErrors}>
                  {f.valueType === "bool" ? (
                    <select value={f.value || "true"} onChange={(e) => setFilter(i, { ...f, value: e.target.value })}>
                      <option value="true">true</option>
                      <option value="false">false</option>
                    </select>
                  ) : (
                    <input
                      type={f.valueType === "number" ? "number" : "text"}
                      step="any"
                      value={f.value}
                      onChange={(e) => setFilter(i, { ...f, value: e.target.value })}
                    />
                  )}
                </Field>
                <button
                  type="button"
                  className="remove"
                  aria-label={`Remove event property filter ${i + 1}`}
                  onClick={() => onChange({ ...c, where: c.where.filter((x) => x.id !== f.id) })}
                >
                  Remove
                </button>
              </li>
            );
          })}
        </ul>
      )}
      <datalist id={`${listId}-props`}>
        {(schema?.properties ?? []).map((p) => (
          <option key={p.name} value={p.name} />
        ))}
      </datalist>
      {(errors[`${field}.where`] ?? []).length > 0 && <NodeErrors messages={errors[`${field}.where`]!} />}
      {c.where.length < limits.filters && (
        <div className="actions">
          <button type="button" onClick={() => onChange({ ...c, where: [...c.where, newFilter()] })}>
            Add property filter
          </button>
        </div>
      )}
      <div className="condition-fields">
        <Field label="Test" errors={errors[`${field}.count_operator`] ?? errors[`${field}.seen`]}>
          <select value={c.mode} onChange={(e) => onChange({ ...c, mode: e.target.value as "count" | "seen" })}>
            <option value="count">how many times</option>
            <option value="seen">when first or last seen</option>
          </select>
        </Field>
        {c.mode === "count" ? (
          <>
            <Field label="Count">
              <select value={c.countOperator} onChange={(e) => onChange({ ...c, countOperator: e.target.value as CountOp })}>
                {(Object.keys(countWords) as CountOp[]).map((op) => (
                  <option key={op} value={op}>
                    {countWords[op]}
                  </option>
                ))}
              </select>
            </Field>
            <Field label="Times" errors={errors[`${field}.times`]}>
              <input type="number" min={0} max={limits.times} step={1} className="short" value={c.times} onChange={(e) => onChange({ ...c, times: e.target.value })} />
            </Field>
            <Field label="Counted over">
              <select value={c.window} onChange={(e) => onChange({ ...c, window: e.target.value as EventNode["window"] })}>
                <option value="last">the last days</option>
                <option value="between">between two dates</option>
                <option value="all">every retained event</option>
              </select>
            </Field>
            {c.window === "last" && (
              <Field label="Days" hint="Today and the days before it (UTC)." errors={errors[`${field}.within_days`]}>
                <input
                  type="number"
                  min={1}
                  max={limits.windowDays}
                  step={1}
                  className="short"
                  value={c.withinDays}
                  onChange={(e) => onChange({ ...c, withinDays: e.target.value })}
                />
              </Field>
            )}
            {c.window === "between" && (
              <>
                <Field label="From" errors={errors[`${field}.start_date`]}>
                  <input type="date" value={c.startDate} onChange={(e) => onChange({ ...c, startDate: e.target.value })} />
                </Field>
                <Field label="To" hint="Inclusive, UTC days." errors={errors[`${field}.end_date`]}>
                  <input type="date" value={c.endDate} onChange={(e) => onChange({ ...c, endDate: e.target.value })} />
                </Field>
              </>
            )}
          </>
        ) : (
          <>
            <Field label="When">
              <select value={c.seen} onChange={(e) => onChange({ ...c, seen: e.target.value as SeenOp })}>
                {(Object.keys(seenWords) as SeenOp[]).map((op) => (
                  <option key={op} value={op}>
                    {seenWords[op]}
                  </option>
                ))}
              </select>
            </Field>
            <Field label="Time" hint="In your local time." errors={errors[`${field}.seen_time`]}>
              <input
                type="datetime-local"
                value={isoToLocal(c.seenTime)}
                onChange={(e) => onChange({ ...c, seenTime: e.target.value ? new Date(e.target.value).toISOString() : "" })}
              />
            </Field>
          </>
        )}
      </div>
      <NodeErrors messages={errors[field] ?? []} />
    </div>
  );
}
