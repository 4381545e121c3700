import { describe, expect, it } from "vitest";
import { describeEvaluation, describeResponses, pollInterval } from "./describe";

describe("OFREP demo page", () => {
  it("says the value, reason and deciding condition", () => {
    expect(describeEvaluation("exp_1", { value: true, reason: "TARGETING_MATCH", flagMetadata: { decidedBy: "match.conditions[0]" } })).toBe(
      "Flag exp_1 is true (TARGETING_MATCH, decided by match.conditions[0])",
    );
    expect(describeEvaluation("exp_1", { value: false, reason: "DEFAULT" })).toBe("Flag exp_1 is false (DEFAULT)");
  });
  it("says an error and the default it fell back to", () => {
    expect(describeEvaluation("nope", { value: false, errorCode: "FLAG_NOT_FOUND", errorMessage: "no such flag" })).toBe(
      "Flag nope: error FLAG_NOT_FOUND (no such flag); default false",
    );
  });
  it("lists bulk statuses and reads the poll interval", () => {
    expect(describeResponses([200, 304])).toBe("Bulk responses: 200, 304");
    expect(pollInterval("?poll=500")).toBe(500);
    expect(pollInterval("?poll=5")).toBe(200);
    expect(pollInterval("")).toBe(30_000);
    expect(pollInterval("?poll=x")).toBe(30_000);
  });
});
