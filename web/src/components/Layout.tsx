import { NavLink, Outlet } from "react-router";
import { useSession } from "../session/SessionContext";
import { roleLabel } from "../session/store";
import { EnvironmentSwitcher } from "./EnvironmentSwitcher";

const sections = [
  { to: "/integrations", label: "Integrations" },
  { to: "/segments", label: "Segments" },
  { to: "/events", label: "Events" },
  { to: "/targeting", label: "Targeting" },
  { to: "/admin", label: "Admin" },
] as const;

export function Layout() {
  const { key, signOut } = useSession();
  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">seghub</span>
        <nav aria-label="Sections">
          <ul>
            {sections.map((s) => (
              <li key={s.to}>
                <NavLink to={s.to}>{s.label}</NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <EnvironmentSwitcher />
          <span className="role" aria-label="Your role">
            {roleLabel(key?.role)}
          </span>
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
