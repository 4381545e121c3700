import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Route, Routes } from "react-router";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { loadSession, storageKey } from "../session/store";
import { useSession } from "../session/SessionContext";
import { SignInPage } from "./SignInPage";

afterEach(() => vi.unstubAllGlobals());

function Landing() {
  const { key, signOut } = useSession();
  return (
    <div>
      <p>signed in as {key?.role}</p>
      <button onClick={signOut}>Sign out</button>
    </div>
  );
}

const app = (
  <Routes>
    <Route path="/sign-in" element={<SignInPage />} />
    <Route path="/segments" element={<Landing />} />
  </Routes>
);

describe("SignInPage", () => {
  it("checks the key with WhoAmI, keeps it for this tab only, and sign-out forgets it", async () => {
    const fetch = mockFetch(
      on("GET", "/v1/whoami", (_, init) =>
        (init.headers as Record<string, string>).Authorization === "Bearer sghk_good"
          ? { body: { environment_id: "env_1", api_key_id: "key_1", role: "ROLE_MEMBER" } }
          : { status: 401, body: { code: 16, message: "unknown or revoked API key" } },
      ),
    );
    renderAs(null, app, "/sign-in");
    await userEvent.type(screen.getByLabelText("API key"), "  sghk_good ");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText("signed in as ROLE_MEMBER")).toBeTruthy();
    expect(fetch).toHaveBeenCalledOnce();
    expect(loadSession()?.keys).toEqual([{ secret: "sghk_good", environmentId: "env_1", apiKeyId: "key_1", role: "ROLE_MEMBER" }]);
    expect(localStorage.length).toBe(0);
    await userEvent.click(screen.getByRole("button", { name: "Sign out" }));
    expect(sessionStorage.getItem(storageKey)).toBeNull();
  });

  it("shows the server's refusal in its words and stores nothing", async () => {
    mockFetch(on("GET", "/v1/whoami", () => ({ status: 401, body: { code: 16, message: "unknown or revoked API key" } })));
    renderAs(null, app, "/sign-in");
    await userEvent.type(screen.getByLabelText("API key"), "sghk_bad");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText("unknown or revoked API key")).toBeTruthy();
    expect(loadSession()).toBeUndefined();
  });
});
