import type { Segment } from "../api/schema.gen";

export function ComputedBadge() {
  return (
    <span className="tag tag-computed" title="Members follow a rule over user properties and events, kept live by seghub">
      Computed
    </span>
  );
}

/** Where a computed segment's computation stands: "computing… 42%" until it is live. */
export function ComputeStatus({ segment: s }: { segment: Segment }) {
  if (s.compute_state === "COMPUTE_STATE_COMPUTING") {
    const pct = Math.max(0, Math.min(100, s.compute_percent ?? 0));
    return (
      <span className="computing" role="status">
        computing… {pct}%
        <progress max={100} value={pct} aria-label="Computed so far" />
      </span>
    );
  }
  if (s.compute_state === "COMPUTE_STATE_LIVE") {
    return (
      <span className="status-ok" title="Follows every new event, user change and passing day">
        live
      </span>
    );
  }
  return null;
}
