// Display helpers: wire values (int64 strings, durations "3600s", RFC 3339
// times, enum names) in words.

export function count(v: string | number | undefined): string {
  const n = typeof v === "number" ? v : Number(v ?? 0);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : String(v);
}

/** "3600s" → "every hour", "14400s" → "every 4 hours". */
export function every(duration: string | undefined): string {
  const s = Number((duration ?? "").replace(/s$/, ""));
  if (!s) return "";
  if (s % 86400 === 0) return s === 86400 ? "every day" : `every ${s / 86400} days`;
  if (s % 3600 === 0) return s === 3600 ? "hourly" : `every ${s / 3600} hours`;
  if (s % 60 === 0) return s === 60 ? "every minute" : `every ${s / 60} minutes`;
  return `every ${s} seconds`;
}

export function days(duration: string | undefined): string {
  const s = Number((duration ?? "").replace(/s$/, ""));
  return s ? `${Math.round(s / 86400)} days` : "";
}

export function when(t: string | undefined): string {
  if (!t) return "never";
  const d = new Date(t);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return "never";
  return d.toLocaleString("en-US", { dateStyle: "medium", timeStyle: "medium" });
}

/** "SYNC_RUN_STATUS_SUCCEEDED" with prefix "SYNC_RUN_STATUS_" → "succeeded". */
export function enumWord(v: string | undefined, prefix: string): string {
  if (!v || v.endsWith("UNSPECIFIED")) return "";
  return v.slice(prefix.length).toLowerCase().replace(/_/g, " ");
}

/** "account_id" → "Account ID". */
export function fieldLabel(name: string): string {
  return name
    .split("_")
    .map((w) => (w === "id" ? "ID" : w === "url" ? "URL" : w === "api" ? "API" : w.charAt(0).toUpperCase() + w.slice(1)))
    .join(" ");
}

/** "2 of 10 recurring Appcues syncs in use"; a limit of 0 means none. */
export function recurringUsage(used: number, limit: number, type: { display_name?: string }): string {
  const tool = type.display_name ?? "";
  return limit > 0 ? `${used} of ${limit} recurring ${tool} syncs in use` : `${used} recurring ${tool} syncs in use (no limit)`;
}
