// The audience builder's model and its conversion to and from the API's
// Audience (everyone, or AND / OR groups of segment and property conditions).
// Validation mirrors services/targeting/internal/audience and reports on the
// same field paths the server uses, so client and server errors land alike.
import type { Audience, Condition, ConditionGroup, Operator } from "../api/schema.gen";

export type ConditionKind = "in_segment" | "not_in_segment" | "property";
export type PropertyOperator = Extract<
  Operator,
  "OPERATOR_EQUALS" | "OPERATOR_NOT_EQUALS" | "OPERATOR_LESS_THAN" | "OPERATOR_GREATER_THAN" | "OPERATOR_CONTAINS" | "OPERATOR_EXISTS"
>;
export type ValueType = "string" | "number" | "bool" | "timestamp";

export interface ConditionDraft {
  id: string;
  kind: ConditionKind;
  segmentId: string;
  property: string;
  operator: PropertyOperator;
  valueType: ValueType;
  /** As typed: text, a number, "true"/"false", or an RFC 3339 time. */
  value: string;
}

export interface GroupDraft {
  id: string;
  combinator: "AND" | "OR";
  conditions: ConditionDraft[];
  groups: GroupDraft[];
}

export interface AudienceDraft {
  everyone: boolean;
  match: GroupDraft;
}

/** The operators each value type may compare with (the server's rules). */
export const operatorsFor: Record<ValueType, readonly PropertyOperator[]> = {
  string: ["OPERATOR_EQUALS", "OPERATOR_NOT_EQUALS", "OPERATOR_CONTAINS", "OPERATOR_EXISTS"],
  number: ["OPERATOR_EQUALS", "OPERATOR_NOT_EQUALS", "OPERATOR_LESS_THAN", "OPERATOR_GREATER_THAN", "OPERATOR_EXISTS"],
  bool: ["OPERATOR_EQUALS", "OPERATOR_NOT_EQUALS", "OPERATOR_EXISTS"],
  timestamp: ["OPERATOR_EQUALS", "OPERATOR_NOT_EQUALS", "OPERATOR_LESS_THAN", "OPERATOR_GREATER_THAN", "OPERATOR_EXISTS"],
};

export const operatorWords: Record<PropertyOperator, string> = {
  OPERATOR_EQUALS: "equals",
  OPERATOR_NOT_EQUALS: "does not equal",
  OPERATOR_LESS_THAN: "is less than",
  OPERATOR_GREATER_THAN: "is greater than",
  OPERATOR_CONTAINS: "contains",
  OPERATOR_EXISTS: "is set",
};

let seq = 0;
const nextId = (p: string) => `${p}${++seq}`;

export function newCondition(kind: ConditionKind = "in_segment"): ConditionDraft {
  return { id: nextId("c"), kind, segmentId: "", property: "", operator: "OPERATOR_EQUALS", valueType: "string", value: "" };
}

export function newGroup(combinator: "AND" | "OR" = "AND"): GroupDraft {
  return { id: nextId("g"), combinator, conditions: [], groups: [] };
}

export function everyoneDraft(): AudienceDraft {
  return { everyone: true, match: newGroup() };
}

// ---- draft → API ----

export function toAudience(d: AudienceDraft): Audience {
  return d.everyone ? { everyone: true } : { match: toGroup(d.match) };
}

function toGroup(g: GroupDraft): ConditionGroup {
  const out: ConditionGroup = { combinator: g.combinator === "OR" ? "COMBINATOR_OR" : "COMBINATOR_AND" };
  if (g.conditions.length) out.conditions = g.conditions.map(toCondition);
  if (g.groups.length) out.groups = g.groups.map(toGroup);
  return out;
}

function toCondition(c: ConditionDraft): Condition {
  if (c.kind !== "property") {
    return { operator: c.kind === "in_segment" ? "OPERATOR_IN_SEGMENT" : "OPERATOR_NOT_IN_SEGMENT", segment_id: c.segmentId };
  }
  const out: Condition = { operator: c.operator, property: c.property.trim() };
  if (c.operator === "OPERATOR_EXISTS") return out;
  switch (c.valueType) {
    case "string":
      out.string_value = c.value;
      break;
    case "number":
      out.number_value = Number(c.value);
      break;
    case "bool":
      out.bool_value = c.value === "true";
      break;
    case "timestamp":
      out.timestamp_value = new Date(c.value).toISOString();
      break;
  }
  return out;
}

// ---- API → draft ----

export function fromAudience(a: Audience | undefined): AudienceDraft {
  if (!a || a.everyone || !a.match) return everyoneDraft();
  return { everyone: false, match: fromGroup(a.match) };
}

function fromGroup(g: ConditionGroup): GroupDraft {
  return {
    id: nextId("g"),
    combinator: g.combinator === "COMBINATOR_OR" ? "OR" : "AND",
    conditions: (g.conditions ?? []).map(fromCondition),
    groups: (g.groups ?? []).map(fromGroup),
  };
}

function fromCondition(c: Condition): ConditionDraft {
  const d = newCondition();
  if (c.operator === "OPERATOR_IN_SEGMENT" || c.operator === "OPERATOR_NOT_IN_SEGMENT") {
    return { ...d, kind: c.operator === "OPERATOR_IN_SEGMENT" ? "in_segment" : "not_in_segment", segmentId: c.segment_id ?? "" };
  }
  const operator = (c.operator && c.operator in operatorWords ? c.operator : "OPERATOR_EQUALS") as PropertyOperator;
  const base = { ...d, kind: "property" as const, property: c.property ?? "", operator };
  if (c.timestamp_value !== undefined) return { ...base, valueType: "timestamp", value: c.timestamp_value };
  if (c.number_value !== undefined) return { ...base, valueType: "number", value: String(c.number_value) };
  if (c.bool_value !== undefined) return { ...base, valueType: "bool", value: String(c.bool_value) };
  return { ...base, valueType: "string", value: c.string_value ?? "" };
}

// ---- validation ----

/** Problems with a draft, keyed by the server's field path ("audience.match.conditions[0].segment_id"). */
export function validateAudience(d: AudienceDraft): Record<string, string[]> {
  const errs: Record<string, string[]> = {};
  if (d.everyone) return errs;
  const add = (f: string, m: string) => (errs[f] ??= []).push(m);
  let conditions = 0;
  const walk = (g: GroupDraft, field: string, depth: number) => {
    if (depth > 8) add(field, "groups nest at most 8 deep");
    if (g.conditions.length + g.groups.length === 0) add(field, "a group needs at least one condition or group: add a condition");
    g.conditions.forEach((c, i) => {
      conditions++;
      const f = `${field}.conditions[${i}]`;
      if (c.kind !== "property") {
        if (!c.segmentId) add(`${f}.segment_id`, "choose a segment");
        return;
      }
      if (!c.property.trim()) add(`${f}.property`, "choose a user property");
      if (!operatorsFor[c.valueType].includes(c.operator)) {
        add(`${f}.operator`, `${operatorWords[c.operator]} does not apply to a ${c.valueType} value`);
        return;
      }
      if (c.operator === "OPERATOR_EXISTS") return;
      const v = c.value.trim();
      if (c.valueType === "number" && (v === "" || !Number.isFinite(Number(v)))) add(`${f}.value`, "enter a number");
      if (c.valueType === "bool" && v !== "true" && v !== "false") add(`${f}.value`, "choose true or false");
      if (c.valueType === "timestamp" && (v === "" || Number.isNaN(new Date(v).getTime()))) add(`${f}.value`, "enter a date and time");
      if (c.valueType === "string" && c.operator === "OPERATOR_CONTAINS" && c.value === "") add(`${f}.value`, "enter the text to look for");
    });
    g.groups.forEach((sub, i) => walk(sub, `${field}.groups[${i}]`, depth + 1));
  };
  walk(d.match, "audience.match", 1);
  if (conditions > 100) add("audience.match", "an audience holds at most 100 conditions");
  return errs;
}

/**
 * The condition an evaluation's decided_by path names ("match.groups[0].conditions[2]"),
 * or undefined for "everyone", "disabled" or a path the audience lacks.
 */
export function conditionAt(a: Audience | undefined, path: string): Condition | undefined {
  const m = /^match((?:\.groups\[\d+\])*)\.conditions\[(\d+)\]$/.exec(path);
  if (!m || !a?.match) return undefined;
  let g: ConditionGroup | undefined = a.match;
  for (const step of m[1]!.matchAll(/\.groups\[(\d+)\]/g)) g = g?.groups?.[Number(step[1])];
  return g?.conditions?.[Number(m[2])];
}

/** One condition in words, with segment names where known. */
export function describeCondition(c: Condition, segmentName: (id: string) => string | undefined = () => undefined): string {
  const seg = (id = "") => {
    const n = segmentName(id);
    return n ? `“${n}”` : id;
  };
  switch (c.operator) {
    case "OPERATOR_IN_SEGMENT":
      return `in segment ${seg(c.segment_id)}`;
    case "OPERATOR_NOT_IN_SEGMENT":
      return `not in segment ${seg(c.segment_id)}`;
    case undefined:
    case "OPERATOR_UNSPECIFIED":
      return "an incomplete condition";
  }
  const op = operatorWords[c.operator as PropertyOperator];
  if (c.operator === "OPERATOR_EXISTS") return `${c.property} ${op}`;
  const v = c.string_value !== undefined ? `“${c.string_value}”` : c.number_value ?? c.bool_value ?? c.timestamp_value ?? "";
  return `${c.property} ${op} ${String(v)}`;
}

/** Every field path the builder shows an error on, for placing the server's violations. */
export function audienceFields(d: AudienceDraft): string[] {
  const out = ["audience"];
  if (d.everyone) return out;
  const walk = (g: GroupDraft, field: string) => {
    out.push(field, `${field}.combinator`);
    g.conditions.forEach((_, i) => {
      const f = `${field}.conditions[${i}]`;
      out.push(f, `${f}.segment_id`, `${f}.property`, `${f}.operator`, `${f}.value`, `${f}.string_value`, `${f}.number_value`, `${f}.timestamp_value`);
    });
    g.groups.forEach((sub, i) => walk(sub, `${field}.groups[${i}]`));
  };
  walk(d.match, "audience.match");
  return out;
}
