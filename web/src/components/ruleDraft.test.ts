import { describe, expect, it } from "vitest";
import type { SegmentRule } from "../api/schema.gen";
import {
  describeRule,
  fromRule,
  newEventCondition,
  newFilter,
  newGroup,
  newPropertyCondition,
  ruleFields,
  toRule,
  validateRule,
  type GroupNode,
} from "./ruleDraft";

const nested: SegmentRule = {
  all: [
    {
      event: {
        source: "appcues",
        name: "Flow Completed",
        where: [
          { property: "Flow ID", string_value: "onboarding" },
          { property: "step", number_value: 3 },
          { property: "skipped", bool_value: false },
        ],
        count_operator: "COUNT_OPERATOR_AT_LEAST",
        times: 1,
        within_days: 7,
      },
    },
    { not: { property: { property: "plan", operator: "PROPERTY_OPERATOR_EQUALS", value: { string_value: "enterprise" } } } },
    {
      any: [
        { event: { source: "commandbar", name: "Command Executed", count_operator: "COUNT_OPERATOR_EXACTLY", times: 0, start_date: "2026-01-01", end_date: "2026-01-31" } },
        { event: { source: "api", name: "Signed Up", seen: "SEEN_OPERATOR_FIRST_AFTER", seen_time: "2026-02-01T09:30:00.000Z" } },
        { property: { property: "seats", operator: "PROPERTY_OPERATOR_GREATER_THAN", value: { number_value: 5 } } },
        { property: { property: "signed_up", operator: "PROPERTY_OPERATOR_LESS_THAN", value: { timestamp_value: "2026-01-31T10:00:00.000Z" } } },
        { not: { any: [{ property: { property: "email", operator: "PROPERTY_OPERATOR_EXISTS" } }, { event: { source: "api", name: "x", count_operator: "COUNT_OPERATOR_AT_MOST", times: 2 } }] } },
      ],
    },
  ],
};

describe("rule draft ⇄ API rule", () => {
  it("round-trips nested all / any / not with every condition kind, window and value type", () => {
    const d = fromRule(nested);
    expect(d.combinator).toBe("all");
    expect(d.children.map((c) => [c.kind, c.negate])).toEqual([
      ["event", false],
      ["property", true],
      ["group", false],
    ]);
    expect(validateRule(d)).toEqual({});
    expect(toRule(d)).toEqual(nested);
  });

  it("wraps a rule that is a single condition in an all group", () => {
    const one: SegmentRule = { property: { property: "beta", operator: "PROPERTY_OPERATOR_EQUALS", value: { bool_value: true } } };
    expect(toRule(fromRule(one))).toEqual({ all: [one] });
    expect(toRule(fromRule({ not: { all: [one, one] } }))).toEqual({ all: [{ not: { all: [one, one] } }] });
  });

  it("sends no value with exists, and nothing but seen and seen_time for a seen condition", () => {
    const p = { ...newPropertyCondition(), property: "plan", operator: "PROPERTY_OPERATOR_EXISTS" as const, value: "x" };
    const e = { ...newEventCondition(), name: "Flow Started", mode: "seen" as const, seen: "SEEN_OPERATOR_LAST_BEFORE" as const, seenTime: "2026-03-01T00:00:00.000Z" };
    expect(toRule(newGroup("any", [p, e]))).toEqual({
      any: [
        { property: { property: "plan", operator: "PROPERTY_OPERATOR_EXISTS" } },
        { event: { source: "appcues", name: "Flow Started", seen: "SEEN_OPERATOR_LAST_BEFORE", seen_time: "2026-03-01T00:00:00.000Z" } },
      ],
    });
  });
});

describe("validateRule", () => {
  const event = (over: Partial<ReturnType<typeof newEventCondition>>) => ({ ...newEventCondition(), name: "Flow Completed", ...over });

  it("names the server's field paths, through groups and NOT", () => {
    const g: GroupNode = newGroup("all", [
      event({}),
      event({ withinDays: "366" }),
      { ...newGroup("any", [{ ...event({ times: "0" }), negate: true }]), negate: true },
      event({ window: "between", startDate: "2026-02-01", endDate: "2026-01-01" }),
      event({ mode: "seen", seenTime: "" }),
      { ...newPropertyCondition(), property: "", valueType: "number", operator: "PROPERTY_OPERATOR_GREATER_THAN", value: "many" },
      event({ name: " ", source: "heap", where: [{ ...newFilter(), property: "Flow ID", value: "a" }, { ...newFilter(), property: "Flow ID", valueType: "number", value: "x" }] }),
    ]);
    expect(validateRule(g)).toEqual({
      "rule.all[1].event.within_days": ["enter a number of days from 1 to 365"],
      "rule.all[2].not.any[0].not.event.times": ["at least 0 times holds for everyone: use 1 or more"],
      "rule.all[3].event.end_date": ["must not be before the first day"],
      "rule.all[4].event.seen_time": ["enter a date and time"],
      "rule.all[5].property.property": ["choose a user property"],
      "rule.all[5].property.value": ["enter a number"],
      "rule.all[6].event.source": ["choose Appcues, CommandBar or API"],
      "rule.all[6].event.name": ["enter the event's name, e.g. Flow Completed"],
      "rule.all[6].event.where[1].property": ["“Flow ID” is filtered twice"],
      "rule.all[6].event.where[1].number_value": ["enter a number"],
    });
    // Every path it reports is one the builder shows.
    const fields = ruleFields(g);
    for (const f of Object.keys(validateRule(g))) {
      expect(fields.some((x) => f === x || f.startsWith(x + "."))).toBe(true);
    }
  });

  it("holds the contract's bounds: 50 conditions, 6 levels, 10 filters, empty groups", () => {
    const many = newGroup("all", Array.from({ length: 51 }, () => event({})));
    expect(validateRule(many)["rule"]).toEqual(["a rule holds at most 50 conditions (property and event)"]);
    expect(validateRule(many)["rule.all"]).toEqual(["holds at most 50 rules"]);
    // rule (1) → all[0] (2) → all[0] (3) → … a condition at level 7 is too deep.
    let deep: GroupNode = newGroup("all", [event({})]);
    for (let i = 0; i < 5; i++) deep = newGroup("all", [deep]);
    expect(validateRule(deep)).toEqual({ "rule.all[0].all[0].all[0].all[0].all[0].all[0]": ["rules nest at most 6 deep"] });
    const filters = event({ where: Array.from({ length: 11 }, (_, i) => ({ ...newFilter(), property: `p${i}`, value: "v" })) });
    expect(validateRule(newGroup("all", [filters]))).toEqual({ "rule.all[0].event.where": ["holds at most 10 filters"] });
    expect(validateRule(newGroup("any"))).toEqual({ rule: ["an empty group: add a condition or remove the group"] });
  });
});

describe("describeRule", () => {
  it("says a rule in words", () => {
    expect(describeRule({ event: { source: "appcues", name: "Flow Completed", count_operator: "COUNT_OPERATOR_AT_LEAST", times: 1, within_days: 7 } })).toBe(
      "Appcues · Flow Completed ≥ 1 time in the last 7 days",
    );
    expect(describeRule(nested)).toBe(
      "Appcues · Flow Completed where Flow ID = “onboarding” and step = 3 and skipped = false ≥ 1 time in the last 7 days" +
        " and not plan equals “enterprise”" +
        " and (CommandBar · Command Executed exactly 0 times between 2026-01-01 and 2026-01-31" +
        ` or API · Signed Up first seen at or after ${new Date("2026-02-01T09:30:00.000Z").toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" })}` +
        " or seats is greater than 5" +
        ` or signed_up is less than ${new Date("2026-01-31T10:00:00.000Z").toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" })}` +
        " or not (email is set or API · x ≤ 2 times))",
    );
  });
});
