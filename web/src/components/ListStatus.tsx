import type { ReactNode } from "react";
import { EmptyState } from "./EmptyState";
import { ErrorNotice } from "./ErrorNotice";

/**
 * What stands before a list's rows: why it failed to load, or, once loaded
 * with nothing to show (empty), what to do next.
 */
export function ListStatus({ error, empty, title, children }: { error: unknown; empty: boolean; title: string; children?: ReactNode }) {
  return (
    <>
      <ErrorNotice error={error} />
      {empty && <EmptyState title={title}>{children}</EmptyState>}
    </>
  );
}
