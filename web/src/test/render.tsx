import type { ReactElement } from "react";
import { render } from "@testing-library/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { MemoryRouter } from "react-router";
import { SessionProvider } from "../session/SessionContext";
import { saveSession, withKey } from "../session/store";
import type { Role } from "../api/schema.gen";

/** Renders ui signed in with a key of role (or signed out), at route. */
export function renderAs(role: Role | null, ui: ReactElement, route = "/") {
  if (role) saveSession(withKey(undefined, { secret: "sghk_test", environmentId: "env_test", apiKeyId: "key_test", role }));
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } });
  return render(
    <QueryClientProvider client={qc}>
      <MemoryRouter initialEntries={[route]}>
        <SessionProvider>{ui}</SessionProvider>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}
