import { describe, expect, it } from "vitest";
import { decodeError } from "./client";
import { placeFieldErrors } from "./fieldErrors";

describe("placeFieldErrors", () => {
  const err = decodeError(400, {
    code: 3,
    message: "2 fields are invalid",
    details: [
      {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        field_violations: [
          { field: "credentials.api_key", description: "is required" },
          { field: "settings.identity_property", description: "has control characters" },
          { field: "interval", description: "must be at least 1m" },
        ],
      },
    ],
  });

  it("puts each violation on its field, or on the nearest enclosing one", () => {
    const { byField, unplaced } = placeFieldErrors(err, ["credentials.api_key", "settings", "name"]);
    expect(byField).toEqual({
      "credentials.api_key": ["is required"],
      settings: ["has control characters"],
    });
    expect(unplaced).toEqual(["interval: must be at least 1m"]);
  });

  it("places nothing for errors that are not the API's", () => {
    expect(placeFieldErrors(new Error("boom"), ["name"])).toEqual({ byField: {}, unplaced: [] });
  });
});
