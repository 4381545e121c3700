// The rule builder's model for computed segments and its conversion to and
// from the API's SegmentRule (all / any / not of property and event
// conditions). Validation mirrors services/segmentsync/internal/rules and
// reports on the same field paths the server uses ("rule.all[1].event.within_days"),
// so client and server errors land on the same controls.
import type {
  CountOperator,
  EventCondition,
  EventPropertyFilter,
  PropertyCondition,
  PropertyOperator,
  PropertyValue,
  SeenOperator,
  SegmentRule,
} from "../api/schema.gen";

/** The contract's bounds (SegmentRule, EventCondition). */
export const limits = {
  conditions: 50,
  depth: 6,
  filters: 10,
  windowDays: 365,
  times: 1_000_000,
  propertyBytes: 128,
  sourceBytes: 64,
  nameBytes: 256,
  valueBytes: 4096,
  filterValueBytes: 1024,
} as const;

export const sources = { appcues: "Appcues", commandbar: "CommandBar", api: "API" } as const;
export type Source = keyof typeof sources;

export type ValueType = "string" | "number" | "bool" | "timestamp";
export type FilterType = "string" | "number" | "bool";
export type RuleOperator = Exclude<PropertyOperator, "PROPERTY_OPERATOR_UNSPECIFIED">;
export type CountOp = Exclude<CountOperator, "COUNT_OPERATOR_UNSPECIFIED">;
export type SeenOp = Exclude<SeenOperator, "SEEN_OPERATOR_UNSPECIFIED">;

interface Base {
  id: string;
  /** Wrapped in NOT: users for whom this does not hold. */
  negate: boolean;
}

export interface PropertyNode extends Base {
  kind: "property";
  property: string;
  operator: RuleOperator;
  valueType: ValueType;
  /** As typed: text, a number, "true"/"false", or an RFC 3339 time. */
  value: string;
}

export interface FilterDraft {
  id: string;
  property: string;
  valueType: FilterType;
  value: string;
}

export interface EventNode extends Base {
  kind: "event";
  source: string;
  name: string;
  where: FilterDraft[];
  /** A count condition (how many times) or a seen condition (first / last time). */
  mode: "count" | "seen";
  countOperator: CountOp;
  times: string;
  /** Which days are counted: every retained event, the last N days, or between two dates. */
  window: "all" | "last" | "between";
  withinDays: string;
  startDate: string;
  endDate: string;
  seen: SeenOp;
  /** RFC 3339. */
  seenTime: string;
}

export interface GroupNode extends Base {
  kind: "group";
  combinator: "all" | "any";
  children: RuleNode[];
}

export type RuleNode = PropertyNode | EventNode | GroupNode;

export const operatorsFor: Record<ValueType, readonly RuleOperator[]> = {
  string: ["PROPERTY_OPERATOR_EQUALS", "PROPERTY_OPERATOR_NOT_EQUALS", "PROPERTY_OPERATOR_CONTAINS", "PROPERTY_OPERATOR_EXISTS"],
  number: [
    "PROPERTY_OPERATOR_EQUALS",
    "PROPERTY_OPERATOR_NOT_EQUALS",
    "PROPERTY_OPERATOR_LESS_THAN",
    "PROPERTY_OPERATOR_GREATER_THAN",
    "PROPERTY_OPERATOR_EXISTS",
  ],
  bool: ["PROPERTY_OPERATOR_EQUALS", "PROPERTY_OPERATOR_NOT_EQUALS", "PROPERTY_OPERATOR_EXISTS"],
  timestamp: [
    "PROPERTY_OPERATOR_EQUALS",
    "PROPERTY_OPERATOR_NOT_EQUALS",
    "PROPERTY_OPERATOR_LESS_THAN",
    "PROPERTY_OPERATOR_GREATER_THAN",
    "PROPERTY_OPERATOR_EXISTS",
  ],
};

export const operatorWords: Record<RuleOperator, string> = {
  PROPERTY_OPERATOR_EQUALS: "equals",
  PROPERTY_OPERATOR_NOT_EQUALS: "does not equal",
  PROPERTY_OPERATOR_LESS_THAN: "is less than",
  PROPERTY_OPERATOR_GREATER_THAN: "is greater than",
  PROPERTY_OPERATOR_CONTAINS: "contains",
  PROPERTY_OPERATOR_EXISTS: "is set",
};

export const countWords: Record<CountOp, string> = {
  COUNT_OPERATOR_AT_LEAST: "at least",
  COUNT_OPERATOR_AT_MOST: "at most",
  COUNT_OPERATOR_EXACTLY: "exactly",
};

const countSigns: Record<CountOp, string> = {
  COUNT_OPERATOR_AT_LEAST: "≥",
  COUNT_OPERATOR_AT_MOST: "≤",
  COUNT_OPERATOR_EXACTLY: "exactly",
};

export const seenWords: Record<SeenOp, string> = {
  SEEN_OPERATOR_FIRST_BEFORE: "first seen before",
  SEEN_OPERATOR_FIRST_AFTER: "first seen at or after",
  SEEN_OPERATOR_LAST_BEFORE: "last seen before",
  SEEN_OPERATOR_LAST_AFTER: "last seen at or after",
};

let seq = 0;
const nextId = (p: string) => `${p}${++seq}`;

export function newGroup(combinator: "all" | "any" = "all", children: RuleNode[] = []): GroupNode {
  return { id: nextId("g"), kind: "group", negate: false, combinator, children };
}

export function newPropertyCondition(): PropertyNode {
  return { id: nextId("p"), kind: "property", negate: false, property: "", operator: "PROPERTY_OPERATOR_EQUALS", valueType: "string", value: "" };
}

export function newEventCondition(): EventNode {
  return {
    id: nextId("e"),
    kind: "event",
    negate: false,
    source: "appcues",
    name: "",
    where: [],
    mode: "count",
    countOperator: "COUNT_OPERATOR_AT_LEAST",
    times: "1",
    window: "last",
    withinDays: "7",
    startDate: "",
    endDate: "",
    seen: "SEEN_OPERATOR_LAST_AFTER",
    seenTime: "",
  };
}

export function newFilter(): FilterDraft {
  return { id: nextId("f"), property: "", valueType: "string", value: "" };
}

/** A new computed segment's rule: all of one event condition. */
export function newRule(): GroupNode {
  return newGroup("all", [newEventCondition()]);
}

// ---- draft → API ----

export function toRule(g: GroupNode): SegmentRule {
  return nodeRule(g);
}

function nodeRule(n: RuleNode): SegmentRule {
  let r: SegmentRule;
  switch (n.kind) {
    case "group":
      r = n.combinator === "all" ? { all: n.children.map(nodeRule) } : { any: n.children.map(nodeRule) };
      break;
    case "property":
      r = { property: propertyCondition(n) };
      break;
    case "event":
      r = { event: eventCondition(n) };
      break;
  }
  return n.negate ? { not: r } : r;
}

function propertyCondition(n: PropertyNode): PropertyCondition {
  const out: PropertyCondition = { property: n.property.trim(), operator: n.operator };
  if (n.operator === "PROPERTY_OPERATOR_EXISTS") return out;
  let value: PropertyValue;
  switch (n.valueType) {
    case "number":
      value = { number_value: Number(n.value) };
      break;
    case "bool":
      value = { bool_value: n.value === "true" };
      break;
    case "timestamp":
      value = { timestamp_value: new Date(n.value).toISOString() };
      break;
    default:
      value = { string_value: n.value };
  }
  return { ...out, value };
}

function filterOf(f: FilterDraft): EventPropertyFilter {
  const property = f.property.trim();
  switch (f.valueType) {
    case "number":
      return { property, number_value: Number(f.value) };
    case "bool":
      return { property, bool_value: f.value === "true" };
    default:
      return { property, string_value: f.value };
  }
}

function eventCondition(n: EventNode): EventCondition {
  const out: EventCondition = { source: n.source, name: n.name.trim() };
  if (n.where.length) out.where = n.where.map(filterOf);
  if (n.mode === "seen") {
    out.seen = n.seen;
    out.seen_time = n.seenTime ? new Date(n.seenTime).toISOString() : "";
    return out;
  }
  out.count_operator = n.countOperator;
  out.times = Number(n.times);
  if (n.window === "last") out.within_days = Number(n.withinDays);
  if (n.window === "between") {
    out.start_date = n.startDate;
    out.end_date = n.endDate;
  }
  return out;
}

// ---- API → draft ----

/** The builder's draft of a rule; a rule that is not a group becomes "all of" that one rule. */
export function fromRule(r: SegmentRule | undefined): GroupNode {
  if (!r) return newRule();
  const n = nodeFrom(r);
  return n.kind === "group" && !n.negate ? n : newGroup("all", [n]);
}

function nodeFrom(r: SegmentRule): RuleNode {
  if (r.not) {
    const inner = nodeFrom(r.not);
    return { ...inner, negate: !inner.negate };
  }
  if (r.all?.length) return newGroup("all", r.all.map(nodeFrom));
  if (r.any?.length) return newGroup("any", r.any.map(nodeFrom));
  if (r.property) return propertyFrom(r.property);
  if (r.event) return eventFrom(r.event);
  return newGroup("all");
}

function propertyFrom(p: PropertyCondition): PropertyNode {
  const operator = (p.operator && p.operator in operatorWords ? p.operator : "PROPERTY_OPERATOR_EQUALS") as RuleOperator;
  const base: PropertyNode = { ...newPropertyCondition(), property: p.property ?? "", operator };
  const v = p.value ?? {};
  if (v.timestamp_value !== undefined) return { ...base, valueType: "timestamp", value: v.timestamp_value };
  if (v.number_value !== undefined) return { ...base, valueType: "number", value: String(v.number_value) };
  if (v.bool_value !== undefined) return { ...base, valueType: "bool", value: String(v.bool_value) };
  return { ...base, valueType: "string", value: v.string_value ?? "" };
}

function eventFrom(e: EventCondition): EventNode {
  const base: EventNode = {
    ...newEventCondition(),
    source: e.source ?? "",
    name: e.name ?? "",
    where: (e.where ?? []).map((w) => {
      const f = { ...newFilter(), property: w.property ?? "" };
      if (w.number_value !== undefined) return { ...f, valueType: "number" as const, value: String(w.number_value) };
      if (w.bool_value !== undefined) return { ...f, valueType: "bool" as const, value: String(w.bool_value) };
      return { ...f, value: w.string_value ?? "" };
    }),
  };
  if (e.seen && e.seen !== "SEEN_OPERATOR_UNSPECIFIED") {
    return { ...base, mode: "seen", seen: e.seen, seenTime: e.seen_time ?? "" };
  }
  const countOperator = (e.count_operator && e.count_operator in countWords ? e.count_operator : "COUNT_OPERATOR_AT_LEAST") as CountOp;
  const counted = { ...base, mode: "count" as const, countOperator, times: String(e.times ?? 0) };
  if (e.within_days) return { ...counted, window: "last", withinDays: String(e.within_days) };
  if (e.start_date || e.end_date) return { ...counted, window: "between", startDate: e.start_date ?? "", endDate: e.end_date ?? "" };
  return { ...counted, window: "all" };
}

// ---- field paths ----

/**
 * Where a child of a group sits: field is its path in the group, inner the
 * path of the condition or group itself (field + ".not" when negated).
 */
export function childPath(group: GroupNode, groupPath: string, i: number): { field: string; inner: string } {
  const field = `${groupPath}.${group.combinator}[${i}]`;
  const c = group.children[i]!;
  return { field, inner: c.negate ? `${field}.not` : field };
}

/** Every field path the builder shows an error on, for placing the server's violations. */
export function ruleFields(g: GroupNode): string[] {
  const out = ["rule"];
  const walk = (n: RuleNode, field: string, inner: string) => {
    out.push(field, inner);
    if (n.kind === "group") {
      out.push(`${inner}.${n.combinator}`);
      n.children.forEach((_, i) => {
        const p = childPath(n, inner, i);
        walk(n.children[i]!, p.field, p.inner);
      });
    } else if (n.kind === "property") {
      const p = `${inner}.property`;
      out.push(p, `${p}.property`, `${p}.operator`, `${p}.value`);
    } else {
      const e = `${inner}.event`;
      out.push(e, `${e}.source`, `${e}.name`, `${e}.where`, `${e}.count_operator`, `${e}.times`, `${e}.within_days`);
      out.push(`${e}.start_date`, `${e}.end_date`, `${e}.seen`, `${e}.seen_time`);
      n.where.forEach((_, i) => out.push(`${e}.where[${i}]`, `${e}.where[${i}].property`));
    }
  };
  // The top group is "rule" itself; it cannot be negated.
  out.push(`rule.${g.combinator}`);
  g.children.forEach((_, i) => {
    const p = childPath(g, "rule", i);
    walk(g.children[i]!, p.field, p.inner);
  });
  return out;
}

// ---- validation ----

const bytes = (s: string) => new TextEncoder().encode(s).length;
const isDate = (s: string) => /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(new Date(`${s}T00:00:00Z`).getTime());
const isInt = (s: string) => /^\d+$/.test(s.trim());

/** Problems with a draft, keyed by the server's field path; empty when the server's rules hold. */
export function validateRule(g: GroupNode): Record<string, string[]> {
  const errs: Record<string, string[]> = {};
  const add = (f: string, m: string) => (errs[f] ??= []).push(m);
  let conditions = 0;
  const named = (f: string, v: string, max: number, what: string) => {
    if (!v.trim()) add(f, what);
    else if (bytes(v) > max) add(f, `must be at most ${max} bytes`);
  };

  const walk = (n: RuleNode, field: string, depth: number) => {
    if (depth > limits.depth) {
      add(field, `rules nest at most ${limits.depth} deep`);
      return;
    }
    if (n.negate && field !== "rule") {
      if (depth + 1 > limits.depth) {
        add(field, `rules nest at most ${limits.depth} deep`);
        return;
      }
      field = `${field}.not`;
      depth++;
    }
    switch (n.kind) {
      case "group":
        if (n.children.length === 0) add(field, "an empty group: add a condition or remove the group");
        if (n.children.length > limits.conditions) add(`${field}.${n.combinator}`, `holds at most ${limits.conditions} rules`);
        n.children.forEach((c, i) => walk(c, `${field}.${n.combinator}[${i}]`, depth + 1));
        return;
      case "property": {
        conditions++;
        const p = `${field}.property`;
        named(`${p}.property`, n.property, limits.propertyBytes, "choose a user property");
        if (!operatorsFor[n.valueType].includes(n.operator)) {
          add(`${p}.operator`, `“${operatorWords[n.operator]}” does not apply to a ${n.valueType} value`);
          return;
        }
        if (n.operator === "PROPERTY_OPERATOR_EXISTS") return;
        const v = n.value.trim();
        if (n.valueType === "number" && (v === "" || !Number.isFinite(Number(v)))) add(`${p}.value`, "enter a number");
        if (n.valueType === "bool" && v !== "true" && v !== "false") add(`${p}.value`, "choose true or false");
        if (n.valueType === "timestamp" && (v === "" || Number.isNaN(new Date(v).getTime()))) add(`${p}.value`, "enter a date and time");
        if (n.valueType === "string" && bytes(n.value) > limits.valueBytes) add(`${p}.value`, `must be at most ${limits.valueBytes} bytes`);
        return;
      }
      case "event": {
        conditions++;
        const e = `${field}.event`;
        if (!(n.source in sources)) add(`${e}.source`, "choose Appcues, CommandBar or API");
        else named(`${e}.source`, n.source, limits.sourceBytes, "choose a source");
        named(`${e}.name`, n.name, limits.nameBytes, "enter the event's name, e.g. Flow Completed");
        if (n.where.length > limits.filters) add(`${e}.where`, `holds at most ${limits.filters} filters`);
        const filtered = new Set<string>();
        n.where.forEach((f, i) => {
          const w = `${e}.where[${i}]`;
          named(`${w}.property`, f.property, limits.propertyBytes, "enter the event property");
          if (f.property.trim() && filtered.has(f.property.trim())) add(`${w}.property`, `“${f.property.trim()}” is filtered twice`);
          filtered.add(f.property.trim());
          const v = f.value.trim();
          if (f.valueType === "number" && (v === "" || !Number.isFinite(Number(v)))) add(`${w}.number_value`, "enter a number");
          if (f.valueType === "bool" && v !== "true" && v !== "false") add(`${w}.bool_value`, "choose true or false");
          if (f.valueType === "string" && bytes(f.value) > limits.filterValueBytes) add(`${w}.string_value`, `must be at most ${limits.filterValueBytes} bytes`);
        });
        if (n.mode === "seen") {
          if (!n.seenTime || Number.isNaN(new Date(n.seenTime).getTime())) add(`${e}.seen_time`, "enter a date and time");
          return;
        }
        if (!isInt(n.times) || Number(n.times) > limits.times) add(`${e}.times`, `enter a whole number from 0 to ${limits.times.toLocaleString("en-US")}`);
        else if (n.countOperator === "COUNT_OPERATOR_AT_LEAST" && Number(n.times) === 0) add(`${e}.times`, "at least 0 times holds for everyone: use 1 or more");
        if (n.window === "last" && (!isInt(n.withinDays) || Number(n.withinDays) < 1 || Number(n.withinDays) > limits.windowDays)) {
          add(`${e}.within_days`, `enter a number of days from 1 to ${limits.windowDays}`);
        }
        if (n.window === "between") {
          const okStart = isDate(n.startDate);
          if (!okStart) add(`${e}.start_date`, "enter the first day counted");
          if (!isDate(n.endDate)) add(`${e}.end_date`, "enter the last day counted");
          else if (okStart && n.endDate < n.startDate) add(`${e}.end_date`, "must not be before the first day");
        }
        return;
      }
    }
  };
  walk(g, "rule", 1);
  if (conditions > limits.conditions) add("rule", `a rule holds at most ${limits.conditions} conditions (property and event)`);
  return errs;
}

// ---- in words ----

const sourceLabel = (s = "") => (sources as Record<string, string>)[s] ?? s;

function valueWords(v: PropertyValue | undefined): string {
  if (!v) return "";
  if (v.string_value !== undefined) return `“${v.string_value}”`;
  if (v.timestamp_value !== undefined) return timeWords(v.timestamp_value);
  return String(v.number_value ?? v.bool_value ?? "");
}

function timeWords(iso: string | undefined): string {
  const d = new Date(iso ?? "");
  if (!iso || Number.isNaN(d.getTime())) return "(no time)";
  return d.toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" });
}

/** "Appcues · Flow Completed ≥ 1 time in the last 7 days". */
export function describeEvent(e: EventCondition): string {
  let s = `${sourceLabel(e.source)} · ${e.name ?? ""}`;
  const where = (e.where ?? []).map((w) => {
    const v = w.string_value !== undefined ? `“${w.string_value}”` : String(w.number_value ?? w.bool_value ?? "");
    return `${w.property} = ${v}`;
  });
  if (where.length) s += ` where ${where.join(" and ")}`;
  if (e.seen && e.seen !== "SEEN_OPERATOR_UNSPECIFIED") return `${s} ${seenWords[e.seen]} ${timeWords(e.seen_time)}`;
  const op = (e.count_operator && e.count_operator in countSigns ? e.count_operator : "COUNT_OPERATOR_AT_LEAST") as CountOp;
  const n = e.times ?? 0;
  s += ` ${countSigns[op]} ${n.toLocaleString("en-US")} ${n === 1 ? "time" : "times"}`;
  if (e.within_days) s += e.within_days === 1 ? " today" : ` in the last ${e.within_days} days`;
  else if (e.start_date || e.end_date) s += ` between ${e.start_date} and ${e.end_date}`;
  return s;
}

export function describeProperty(p: PropertyCondition): string {
  const op = p.operator && p.operator in operatorWords ? operatorWords[p.operator as RuleOperator] : "(no comparison)";
  return p.operator === "PROPERTY_OPERATOR_EXISTS" ? `${p.property} ${op}` : `${p.property} ${op} ${valueWords(p.value)}`;
}

/** A rule in words: groups joined by "and" / "or", nested ones in parentheses, NOT as "not". */
export function describeRule(r: SegmentRule | undefined): string {
  if (!r) return "";
  const inner = (x: SegmentRule): string => {
    const s = describeRule(x);
    const compound = (x.all?.length ?? 0) > 1 || (x.any?.length ?? 0) > 1;
    return compound ? `(${s})` : s;
  };
  if (r.all?.length) return r.all.map(inner).join(" and ");
  if (r.any?.length) return r.any.map(inner).join(" or ");
  if (r.not) return `not ${inner(r.not)}`;
  if (r.property) return describeProperty(r.property);
  if (r.event) return describeEvent(r.event);
  return "an empty rule";
}
