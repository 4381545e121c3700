import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { loadSession, saveSession, withKey } from "../session/store";
import { EnvironmentSwitcher } from "./EnvironmentSwitcher";

afterEach(() => vi.unstubAllGlobals());

describe("EnvironmentSwitcher", () => {
  it("lists the environments whose keys this tab holds, by name for admins", async () => {
    mockFetch(
      on("GET", "/v1/environments", () => ({
        body: { environments: [{ id: "env_prod", name: "production" }, { id: "env_stage", name: "staging" }] },
      })),
    );
    const stage = withKey(undefined, { secret: "sghk_s", environmentId: "env_stage", apiKeyId: "k2", role: "ROLE_MEMBER" });
    saveSession(withKey(stage, { secret: "sghk_p", environmentId: "env_prod", apiKeyId: "k1", role: "ROLE_ADMIN" }));
    renderAs(null, <EnvironmentSwitcher />);
    const select = screen.getByRole("combobox", { name: "Environment" }) as HTMLSelectElement;
    expect(await screen.findByRole("option", { name: "production (admin)" })).toBeTruthy();
    expect(screen.getByRole("option", { name: "staging (member)" })).toBeTruthy();
    expect(select.value).toBe("env_prod");
    expect(screen.getByRole("link", { name: "Add a key for another environment" }).getAttribute("href")).toBe("/sign-in?add=1");
  });

  it("makes the chosen environment's key the one every request carries", async () => {
    saveSession(withKey(withKey(undefined, { secret: "sghk_b", environmentId: "env_b", apiKeyId: "kb", role: "ROLE_MEMBER" }), {
      secret: "sghk_a",
      environmentId: "env_a",
      apiKeyId: "ka",
      role: "ROLE_MEMBER",
    }));
    renderAs(null, <EnvironmentSwitcher />);
    const select = screen.getByRole("combobox", { name: "Environment" }) as HTMLSelectElement;
    expect(select.value).toBe("env_a");
    await userEvent.selectOptions(select, "env_b");
    expect(loadSession()?.current).toBe("env_b");
    expect(select.value).toBe("env_b");
  });
});
