import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { DestinationType } from "../api/schema.gen";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { ConnectForm } from "./ConnectForm";

const appcues: DestinationType = {
  type: "appcues",
  display_name: "Appcues",
  auth_method: "AUTH_METHOD_API_KEY",
  segments_out: true,
  events_in: true,
  credential_fields: ["account_id", "api_key", "api_secret"],
  default_identity_property: "appcuesUserID",
  recurring_limit: 10,
};
const heap: DestinationType = { type: "heap", display_name: "Heap", auth_method: "AUTH_METHOD_SIGNING_SECRET", segments_in: true };
const properties = on("GET", "/v1/user-properties", () => ({
  body: { properties: [{ name: "appcuesUserID", type: "PROPERTY_TYPE_STRING", user_count: "42" }] },
}));

afterEach(() => vi.unstubAllGlobals());

describe("ConnectForm", () => {
  it("offers the identity properties seghub holds, with their counts", async () => {
    mockFetch(properties);
    renderAs("ROLE_ADMIN", <ConnectForm type={appcues} onDone={() => {}} />);
    const select = screen.getByRole("combobox", { name: "Identity property" });
    expect(await screen.findByRole("option", { name: "appcuesUserID — 42 users (string)" })).toBeTruthy();
    expect((select as HTMLSelectElement).value).toBe("appcuesUserID");
  });

  it("lists each property once, also the suggested one shown while the list loaded", async () => {
    // Chromium kept the loading-time "no user holds it yet" option beside the
    // loaded one: React leaves duplicate keys unreconciled.
    const reactErrors = vi.spyOn(console, "error").mockImplementation(() => {});
    mockFetch(properties);
    renderAs("ROLE_ADMIN", <ConnectForm type={appcues} onDone={() => {}} />);
    await screen.findByRole("option", { name: "appcuesUserID — 42 users (string)" });
    expect(reactErrors.mock.calls.flat().join(" ")).not.toContain("two children with the same key");
    reactErrors.mockRestore();
    const texts = screen.getAllByRole("option").map((o) => o.textContent);
    expect(texts.filter((t) => t?.startsWith("appcuesUserID"))).toEqual(["appcuesUserID — 42 users (string)"]);
  });

  it("shows the server's field violation on its field and its refusal in words", async () => {
    const fetch = mockFetch(
      properties,
      on("POST", "/v1/connections", () => ({
        status: 400,
        body: {
          code: 3,
          message: "credentials.api_key: is required",
          details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", field_violations: [{ field: "credentials.api_key", description: "is required" }] }],
        },
      })),
    );
    renderAs("ROLE_ADMIN", <ConnectForm type={appcues} onDone={() => {}} />);
    await userEvent.type(screen.getByLabelText("Account ID"), "demo");
    await userEvent.click(screen.getByRole("button", { name: "Connect" }));
    const key = screen.getByLabelText("API Key");
    await vi.waitFor(() => expect(key.getAttribute("aria-invalid")).toBe("true"));
    const described = key.getAttribute("aria-describedby")!.split(" ").map((id) => document.getElementById(id)?.textContent);
    expect(described).toContain("is required");
    expect(screen.getByText("credentials.api_key: is required")).toBeTruthy();
    const sent = JSON.parse(String((fetch.mock.calls.at(-1)![1] as RequestInit).body));
    expect(sent).toMatchObject({ type: "appcues", credentials: { account_id: "demo" }, settings: { identity_property: "appcuesUserID", send_events: true } });
  });

  it("offers the catalogue's property prefix, sends the one typed and places its violation", async () => {
    const fetch = mockFetch(
      properties,
      on("POST", "/v1/connections", () => ({
        status: 400,
        body: {
          code: 3,
          message: "settings.property_prefix: must be one bracketed label",
          details: [
            {
              "@type": "type.googleapis.com/google.rpc.BadRequest",
              field_violations: [{ field: "settings.property_prefix", description: "must be one bracketed label" }],
            },
          ],
        },
      })),
    );
    renderAs("ROLE_ADMIN", <ConnectForm type={{ ...appcues, default_property_prefix: "[seghub]" }} onDone={() => {}} />);
    const prefix = screen.getByLabelText("Property prefix") as HTMLInputElement;
    expect(prefix.value).toBe("[seghub]");
    await userEvent.clear(prefix);
    await userEvent.type(prefix, "Heap");
    await userEvent.click(screen.getByRole("button", { name: "Connect" }));
    await vi.waitFor(() => expect(prefix.getAttribute("aria-invalid")).toBe("true"));
    const sent = JSON.parse(String((fetch.mock.calls.at(-1)![1] as RequestInit).body));
    expect(sent.settings.property_prefix).toBe("Heap");
  });

  it("asks no prefix of a type that keeps no property per segment", () => {
    mockFetch(properties);
    renderAs("ROLE_ADMIN", <ConnectForm type={appcues} onDone={() => {}} />);
    expect(screen.queryByLabelText("Property prefix")).toBeNull();
  });

  it("shows an inbound source's webhook URL and signing secret once", async () => {
    mockFetch(
      on("POST", "/v1/connections", () => ({
        body: { connection: { connection_id: "conn_h", name: "Heap", type: "heap", webhook_path: "/webhooks/heap/conn_h" }, signing_secret: "whsec_123" },
      })),
    );
    renderAs("ROLE_ADMIN", <ConnectForm type={heap} onDone={() => {}} />);
    await userEvent.click(screen.getByRole("button", { name: "Create source" }));
    expect((await screen.findByText("whsec_123")).id).toBe("signing-secret");
    expect(screen.getByText(/\/webhooks\/heap\/conn_h$/)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Copy signing secret" })).toBeTruthy();
  });

  it("is read-only for a member, with the reason", () => {
    mockFetch(properties);
    renderAs("ROLE_MEMBER", <ConnectForm type={appcues} onDone={() => {}} />);
    expect(screen.getByText(/Only admins can change this/)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Connect" })).toHaveProperty("disabled", true);
  });
});
