import type { Visibility } from "../api/schema.gen";

export function VisibilityBadge({ visibility }: { visibility: Visibility | undefined }) {
  const isPrivate = visibility === "VISIBILITY_PRIVATE";
  return (
    <span className="tag" title={isPrivate ? "Private segments are never synced to tools" : "Public: may be synced to tools"}>
      {isPrivate ? "Private" : "Public"}
    </span>
  );
}
