import type { PropertyType } from "../api/schema.gen";
import { useUserProperties } from "../api/integrations";
import { count, enumWord } from "../format";

// Syncs read "user_id" as the user id itself (segmentsync's IdentityValues).
const userIdItself = "user_id";

/**
 * The identity property, picked from the property names seghub actually holds
 * with how many users hold each: the user property whose values equal the
 * destination's user ids.
 */
export function IdentityPropertySelect({
  value,
  onChange,
  suggested,
  ...rest
}: {
  value: string;
  onChange: (v: string) => void;
  /** The destination's usual property (appcuesUserID, ABTastyVisitorId). */
  suggested?: string;
  id?: string;
  "aria-describedby"?: string;
  "aria-invalid"?: boolean;
  disabled?: boolean;
}) {
  const props = useUserProperties();
  const byName = new Map<string, { users: number; types: PropertyType[] }>();
  for (const p of props.data?.properties ?? []) {
    const e = byName.get(p.name ?? "") ?? { users: 0, types: [] };
    e.users += Number(p.user_count ?? 0);
    if (p.type) e.types.push(p.type);
    byName.set(p.name ?? "", e);
  }
  const names = [...byName.keys()];
  // A current or suggested name nobody holds yet stays choosable, marked so.
  // Once each: value and suggested are often the same name.
  for (const n of [value, suggested]) if (n && n !== userIdItself && !names.includes(n)) names.push(n);
  return (
    <select value={value} onChange={(e) => onChange(e.target.value)} {...rest}>
      <option value="">{props.isLoading ? "Loading properties…" : "Choose a user property"}</option>
      {!byName.has(userIdItself) && <option value={userIdItself}>{userIdItself} — each user's own id (every user has it)</option>}
      {names.map((n) => {
        const e = byName.get(n);
        const label = e
          ? `${n} — ${count(e.users)} users (${e.types.map((t) => enumWord(t, "PROPERTY_TYPE_")).join(", ")})`
          : `${n} — no user holds it yet`;
        return (
          <option key={n} value={n}>
            {label}
          </option>
        );
      })}
    </select>
  );
}
