import { ApiError } from "./client";

/**
 * Places an API error's field violations onto a form's fields. A violation on
 * "credentials.api_key" lands on the field named "credentials.api_key" if the
 * form has it, else on the nearest enclosing field ("credentials"); the rest
 * (and the message, when no violation was placed) stay with the form.
 */
export function placeFieldErrors(
  err: unknown,
  fields: readonly string[],
): { byField: Record<string, string[]>; unplaced: string[] } {
  const byField: Record<string, string[]> = {};
  const unplaced: string[] = [];
  if (!(err instanceof ApiError)) return { byField, unplaced };
  for (const [path, descriptions] of Object.entries(err.fieldViolations)) {
    const target = nearestField(path, fields);
    if (target) (byField[target] ??= []).push(...descriptions);
    else unplaced.push(...descriptions.map((d) => (path ? `${path}: ${d}` : d)));
  }
  return { byField, unplaced };
}

function nearestField(path: string, fields: readonly string[]): string | undefined {
  let p = path;
  for (;;) {
    if (fields.includes(p)) return p;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) return undefined;
    p = p.slice(0, cut);
  }
}
