/** What the OFREP demo page shows, kept apart from the DOM so it is unit-tested. */

export interface BooleanDetails {
  value: boolean;
  reason?: string;
  errorCode?: string;
  errorMessage?: string;
  flagMetadata?: Readonly<Record<string, unknown>>;
}

/** "Flag exp_1 is true (TARGETING_MATCH, decided by match.conditions[0])", or the error. */
export function describeEvaluation(flag: string, d: BooleanDetails): string {
  if (d.errorCode) return `Flag ${flag}: error ${d.errorCode}${d.errorMessage ? ` (${d.errorMessage})` : ""}; default ${d.value}`;
  const decided = typeof d.flagMetadata?.["decidedBy"] === "string" ? `, decided by ${d.flagMetadata["decidedBy"]}` : "";
  return `Flag ${flag} is ${d.value} (${d.reason ?? "UNKNOWN"}${decided})`;
}

/** "Bulk responses: 200, 304" — the statuses of the provider's bulk calls, oldest first. */
export function describeResponses(statuses: readonly number[]): string {
  return `Bulk responses: ${statuses.join(", ")}`;
}

/** The polling interval in ms from the page's ?poll= parameter: 30 s unless given, at least 200 ms. */
export function pollInterval(search: string): number {
  const n = Number(new URLSearchParams(search).get("poll"));
  return Number.isFinite(n) && n > 0 ? Math.max(200, n) : 30_000;
}
