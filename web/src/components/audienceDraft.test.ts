import { describe, expect, it } from "vitest";
import type { Audience } from "../api/schema.gen";
import {
  conditionAt,
  describeCondition,
  everyoneDraft,
  fromAudience,
  newCondition,
  newGroup,
  toAudience,
  validateAudience,
  type AudienceDraft,
} from "./audienceDraft";

const nested: Audience = {
  match: {
    combinator: "COMBINATOR_AND",
    conditions: [
      { operator: "OPERATOR_IN_SEGMENT", segment_id: "seg_trial" },
      { operator: "OPERATOR_GREATER_THAN", property: "seats", number_value: 5 },
    ],
    groups: [
      {
        combinator: "COMBINATOR_OR",
        conditions: [
          { operator: "OPERATOR_NOT_IN_SEGMENT", segment_id: "seg_churned" },
          { operator: "OPERATOR_CONTAINS", property: "email", string_value: "@acme." },
          { operator: "OPERATOR_EQUALS", property: "beta", bool_value: false },
          { operator: "OPERATOR_LESS_THAN", property: "signed_up", timestamp_value: "2026-01-31T10:00:00.000Z" },
          { operator: "OPERATOR_EXISTS", property: "plan" },
        ],
      },
    ],
  },
};

describe("audience draft ⇄ API audience", () => {
  it("round-trips everyone", () => {
    expect(toAudience(fromAudience({ everyone: true }))).toEqual({ everyone: true });
    expect(fromAudience(undefined).everyone).toBe(true);
  });

  it("round-trips nested AND / OR groups with every condition kind and value type", () => {
    const d = fromAudience(nested);
    expect(d.everyone).toBe(false);
    expect(d.match.combinator).toBe("AND");
    expect(d.match.conditions.map((c) => c.kind)).toEqual(["in_segment", "property"]);
    expect(d.match.groups[0]!.combinator).toBe("OR");
    expect(d.match.groups[0]!.conditions.map((c) => c.valueType)).toEqual(["string", "string", "bool", "timestamp", "string"]);
    expect(validateAudience(d)).toEqual({});
    expect(toAudience(d)).toEqual(nested);
  });

  it("builds the documents' flow: Custom → Add condition → Segment", () => {
    const d: AudienceDraft = { everyone: false, match: newGroup() };
    d.match.conditions.push({ ...newCondition("in_segment"), segmentId: "seg_heap" });
    expect(toAudience(d)).toEqual({ match: { combinator: "COMBINATOR_AND", conditions: [{ operator: "OPERATOR_IN_SEGMENT", segment_id: "seg_heap" }] } });
  });

  it("sends no value with exists and a number for number comparisons", () => {
    const d: AudienceDraft = { everyone: false, match: newGroup("OR") };
    d.match.conditions.push({ ...newCondition("property"), property: " plan ", operator: "OPERATOR_EXISTS", value: "ignored" });
    d.match.conditions.push({ ...newCondition("property"), property: "seats", valueType: "number", operator: "OPERATOR_LESS_THAN", value: "2.5" });
    expect(toAudience(d).match!.conditions).toEqual([
      { operator: "OPERATOR_EXISTS", property: "plan" },
      { operator: "OPERATOR_LESS_THAN", property: "seats", number_value: 2.5 },
    ]);
    expect(toAudience(d).match!.combinator).toBe("COMBINATOR_OR");
  });
});

describe("validateAudience", () => {
  it("accepts everyone as it is", () => {
    expect(validateAudience(everyoneDraft())).toEqual({});
  });

  it("reports each problem on the server's field path", () => {
    const d: AudienceDraft = { everyone: false, match: newGroup() };
    d.match.conditions.push(newCondition("in_segment"));
    d.match.conditions.push({ ...newCondition("property"), valueType: "number", value: "many" });
    d.match.conditions.push({ ...newCondition("property"), property: "plan", valueType: "bool", operator: "OPERATOR_CONTAINS" });
    d.match.conditions.push({ ...newCondition("property"), property: "signed_up", valueType: "timestamp", value: "" });
    d.match.groups.push(newGroup());
    expect(validateAudience(d)).toEqual({
      "audience.match.conditions[0].segment_id": ["choose a segment"],
      "audience.match.conditions[1].property": ["choose a user property"],
      "audience.match.conditions[1].value": ["enter a number"],
      "audience.match.conditions[2].operator": ["contains does not apply to a bool value"],
      "audience.match.conditions[3].value": ["enter a date and time"],
      "audience.match.groups[0]": ["a group needs at least one condition or group: add a condition"],
    });
  });

  it("refuses an empty custom audience and more than 100 conditions", () => {
    const empty: AudienceDraft = { everyone: false, match: newGroup() };
    expect(Object.keys(validateAudience(empty))).toEqual(["audience.match"]);
    const big: AudienceDraft = { everyone: false, match: newGroup() };
    for (let i = 0; i < 101; i++) big.match.conditions.push({ ...newCondition("in_segment"), segmentId: "s" });
    expect(validateAudience(big)["audience.match"]).toEqual(["an audience holds at most 100 conditions"]);
  });
});

describe("conditionAt and describeCondition", () => {
  it("finds the condition an evaluation's decided_by names and says it in words", () => {
    const names: Record<string, string> = { seg_churned: "Churned" };
    const c = conditionAt(nested, "match.groups[0].conditions[0]");
    expect(describeCondition(c!, (id) => names[id])).toBe("not in segment “Churned”");
    expect(describeCondition(conditionAt(nested, "match.conditions[1]")!)).toBe("seats is greater than 5");
    expect(describeCondition(conditionAt(nested, "match.groups[0].conditions[4]")!)).toBe("plan is set");
    expect(conditionAt(nested, "everyone")).toBeUndefined();
    expect(conditionAt(nested, "match.groups[3].conditions[0]")).toBeUndefined();
  });
});
