import { Link } from "react-router";
import { useOp } from "../api/hooks";
import { useSession } from "../session/SessionContext";
import { roleLabel } from "../session/store";

/**
 * A key reaches one environment; the switcher moves between the environments
 * whose keys this tab holds, and offers to add a key for another.
 */
export function EnvironmentSwitcher() {
  const { session, key, access, switchEnvironment } = useSession();
  // Admins can read environment names; others see ids.
  const envs = useOp("AdminService_ListEnvironments", {}, { enabled: access.may("AdminService_ListEnvironments") });
  const nameOf = (id: string) => envs.data?.environments?.find((e) => e.id === id)?.name;
  if (!session || !key) return null;
  return (
    <div className="env-switcher">
      <label htmlFor="env-select">Environment</label>
      <select id="env-select" value={session.current} onChange={(e) => switchEnvironment(e.target.value)}>
        {session.keys.map((k) => (
          <option key={k.environmentId} value={k.environmentId}>
            {nameOf(k.environmentId) ?? k.environmentId} ({roleLabel(k.role)})
          </option>
        ))}
      </select>
      <Link to="/sign-in?add=1" className="small-link">
        Add a key for another environment
      </Link>
    </div>
  );
}
