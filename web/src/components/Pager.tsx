import { useCallback, useState } from "react";

/**
 * Page tokens walked forward and back: the API gives only next_page_token,
 * so the tokens of pages already seen are kept to go back.
 */
export function usePageTokens() {
  const [stack, setStack] = useState<string[]>([""]);
  const token = stack[stack.length - 1]!;
  const next = useCallback((t: string) => t && setStack((s) => [...s, t]), []);
  const prev = useCallback(() => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)), []);
  const reset = useCallback(() => setStack([""]), []);
  return { token, page: stack.length, next, prev, reset };
}

export function Pager({
  page,
  nextToken,
  onNext,
  onPrev,
  busy,
  label,
}: {
  page: number;
  nextToken: string | undefined;
  onNext: (t: string) => void;
  onPrev: () => void;
  busy?: boolean;
  label: string;
}) {
  if (page === 1 && !nextToken) return null;
  return (
    <nav className="pager" aria-label={label}>
      <button type="button" onClick={onPrev} disabled={page === 1 || busy}>
        Previous
      </button>
      <span aria-live="polite">Page {page}</span>
      <button type="button" onClick={() => nextToken && onNext(nextToken)} disabled={!nextToken || busy}>
        Next
      </button>
    </nav>
  );
}

/** The Pager of a list query walked with usePageTokens. */
export function ListPager({
  label,
  pages,
  list,
}: {
  label: string;
  pages: ReturnType<typeof usePageTokens>;
  list: { data?: { next_page_token?: string }; isFetching: boolean };
}) {
  return <Pager label={label} page={pages.page} nextToken={list.data?.next_page_token} onNext={pages.next} onPrev={pages.prev} busy={list.isFetching} />;
}
