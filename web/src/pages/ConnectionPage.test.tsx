import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import { Route, Routes } from "react-router";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import ConnectionPage from "./ConnectionPage";

afterEach(() => vi.unstubAllGlobals());

describe("ConnectionPage", () => {
  it("says how many recurring syncs of its type are in use, as the server counts them", async () => {
    mockFetch(
      on("GET", "/v1/connections/conn_a", () => ({
        body: {
          connection: {
            connection_id: "conn_a",
            name: "Appcues A",
            type: "appcues",
            status: "CONNECTION_STATUS_CONNECTED",
            settings: { identity_property: "appcuesUserID" },
            recurring_syncs_in_use: 2,
            recurring_syncs_limit: 10,
          },
        },
      })),
      on("GET", "/v1/destination-types", () => ({
        body: { types: [{ type: "appcues", display_name: "Appcues", segments_out: true, recurring_limit: 10, credential_fields: [] }] },
      })),
      // The listed syncs are this connection's only; the other Appcues
      // connection's recurring sync counts all the same.
      on("GET", "/v1/syncs", () => ({
        body: { syncs: [{ sync_id: "s1", connection_id: "conn_a", destination_type: "appcues", enabled: true, schedule: "SYNC_SCHEDULE_RECURRING" }] },
      })),
      on("GET", "/v1/user-properties", () => ({ body: {} })),
    );
    renderAs(
      "ROLE_MEMBER",
      <Routes>
        <Route path="/integrations/connections/:connectionId" element={<ConnectionPage />} />
      </Routes>,
      "/integrations/connections/conn_a",
    );
    expect((await screen.findByTestId("recurring-usage")).textContent).toMatch(/^2 of 10 recurring Appcues syncs in use in this environment/);
  });
});
