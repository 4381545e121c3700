import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import AdminPage from "../pages/AdminPage";

afterEach(() => vi.unstubAllGlobals());

const stored = [{ id: "key_1", name: "ops", role: "ROLE_ADMIN", prefix: "sghk_ab", create_time: "2026-11-01T00:00:00Z" }];

function server() {
  const keys = [...stored];
  return mockFetch(
    on("GET", "/v1/environments", () => ({ body: { environments: [{ id: "env_test", name: "Production" }] } })),
    on("GET", "/v1/api-keys", () => ({ body: { api_keys: keys } })),
    on("POST", "/v1/api-keys", (_, init) => {
      const req = JSON.parse(String(init.body));
      if (!req.name) {
        return {
          status: 400,
          body: { code: 3, message: "name: is required", details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", field_violations: [{ field: "name", description: "is required" }] }] },
        };
      }
      const k = { id: "key_2", name: req.name, role: req.role, prefix: "sghk_new", create_time: "2026-11-30T00:00:00Z" };
      keys.push(k);
      return { body: { api_key: k, secret: "sghk_new_secret_value" } };
    }),
    on("POST", "/v1/api-keys/key_1:revoke", () => ({ body: { api_key: { ...stored[0], revoke_time: "2026-11-30T00:00:00Z" } } })),
  );
}

describe("Admin: API keys", () => {
  it("shows a created key's secret once, with copy, and never again after it is dismissed", async () => {
    server();
    renderAs("ROLE_ADMIN", <AdminPage />);
    await userEvent.type(screen.getByLabelText("Name", { selector: "input" }), "growth team");
    await userEvent.selectOptions(screen.getByLabelText("Role"), "ROLE_MEMBER");
    await userEvent.click(screen.getByRole("button", { name: "Create key" }));
    const shown = await screen.findByText("sghk_new_secret_value");
    expect(shown).toBeTruthy();
    // Focus moves to the secret, so keyboard and screen-reader users land on it.
    expect(document.activeElement).toBe(screen.getByRole("region", { name: "The new key" }));
    expect(screen.getByRole("button", { name: "Copy key" })).toBeTruthy();
    // The list refetched: the new key is there by its prefix only.
    expect(await screen.findByText("growth team")).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "I have copied it" }));
    expect(screen.queryByText("sghk_new_secret_value")).toBeNull();
    expect(document.body.textContent).not.toContain("sghk_new_secret_value");
  });

  it("creates a browser-safe client key, explaining what it may do", async () => {
    const fetchMock = server();
    renderAs("ROLE_ADMIN", <AdminPage />);
    await userEvent.type(screen.getByLabelText("Name", { selector: "input" }), "marketing site");
    await userEvent.selectOptions(screen.getByLabelText("Role"), "ROLE_CLIENT");
    expect(screen.getByText(/over OFREP/)).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "Create key" }));
    expect(await screen.findByText("sghk_new_secret_value")).toBeTruthy();
    const created = fetchMock.mock.calls.find(([url, init]) => String(url).endsWith("/v1/api-keys") && init?.method === "POST");
    expect(JSON.parse(String(created?.[1]?.body))).toEqual({ name: "marketing site", role: "ROLE_CLIENT" });
  });

  it("puts the server's violation on the name field", async () => {
    server();
    renderAs("ROLE_ADMIN", <AdminPage />);
    await userEvent.click(screen.getByRole("button", { name: "Create key" }));
    const nameInput = screen.getByLabelText("Name", { selector: "input" });
    await vi.waitFor(() => expect(nameInput.getAttribute("aria-invalid")).toBe("true"));
    const described = nameInput.getAttribute("aria-describedby")!.split(" ").map((id) => document.getElementById(id)?.textContent);
    expect(described).toContain("is required");
  });

  it("revokes only after confirmation", async () => {
    const fetch = server();
    renderAs("ROLE_ADMIN", <AdminPage />);
    await userEvent.click(await screen.findByRole("button", { name: "Revoke ops" }));
    expect(fetch.mock.calls.some(([u]) => String(u).includes(":revoke"))).toBe(false);
    const dialog = screen.getByRole("dialog", { name: "Revoke ops?" });
    await userEvent.click(within(dialog).getByRole("button", { name: "Revoke key" }));
    await vi.waitFor(() => expect(fetch.mock.calls.some(([u]) => String(u).endsWith("/v1/api-keys/key_1:revoke"))).toBe(true));
  });

  it("shows a member why, and no admin control or admin request", () => {
    const fetch = mockFetch();
    renderAs("ROLE_MEMBER", <AdminPage />);
    expect(screen.getByText(/Only admins can change this/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Create key" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Create environment" })).toBeNull();
    expect(fetch).not.toHaveBeenCalled();
  });
});
