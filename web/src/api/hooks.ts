// TanStack Query hooks over the typed client: the only way components reach
// the server. Query keys are [operationId, args], so a mutation invalidates
// every cached answer of the operations it changes.
import {
  keepPreviousData,
  useMutation,
  useQuery,
  useQueryClient,
  type UseQueryOptions,
} from "@tanstack/react-query";
import { call, type Answer, type ApiError, type CallArgs, type OperationId } from "./client";

type QueryOpts<K extends OperationId> = Omit<
  UseQueryOptions<Answer<K>, ApiError, Answer<K>, readonly [K, CallArgs<K>]>,
  "queryKey" | "queryFn"
>;

/** A read through op; the key is [op, args]. */
export function useOp<K extends OperationId>(op: K, args: CallArgs<K>, opts: QueryOpts<K> = {}) {
  return useQuery({
    queryKey: [op, args] as const,
    queryFn: ({ signal }) => call(op, args, { signal }),
    ...opts,
  });
}

/** A read of one page, keeping the previous page on screen while the next loads. */
export function usePagedOp<K extends OperationId>(op: K, args: CallArgs<K>, opts: QueryOpts<K> = {}) {
  return useOp(op, args, { placeholderData: keepPreviousData, ...opts });
}

/** A write through op; on success the listed operations' answers are refetched. */
export function useOpMutation<K extends OperationId>(op: K, invalidates: readonly OperationId[] = []) {
  const qc = useQueryClient();
  return useMutation<Answer<K>, ApiError, CallArgs<K>>({
    mutationFn: (args) => call(op, args),
    onSuccess: async () => {
      await Promise.all(invalidates.map((o) => qc.invalidateQueries({ queryKey: [o] })));
    },
  });
}

/** Reads every page of a list operation (for small lists: connections, syncs of a segment). */
export async function allPages<K extends OperationId, T>(
  op: K,
  args: CallArgs<K>,
  items: (a: Answer<K>) => T[] | undefined,
  signal?: AbortSignal,
  maxPages = 50,
): Promise<T[]> {
  const out: T[] = [];
  let token: string | undefined = undefined;
  for (let i = 0; i < maxPages; i++) {
    const q = { ...((args.query ?? {}) as object), page_size: 1000, page_token: token } as never;
    const a = await call(op, { ...args, query: q }, { signal });
    out.push(...(items(a) ?? []));
    token = (a as { next_page_token?: string }).next_page_token || undefined;
    if (!token) break;
  }
  return out;
}

/** Every item of a list operation, as one query. */
export function useAllPages<K extends OperationId, T>(
  op: K,
  args: CallArgs<K>,
  items: (a: Answer<K>) => T[] | undefined,
  opts: { enabled?: boolean; refetchInterval?: number | false } = {},
) {
  return useQuery<T[], ApiError>({
    queryKey: [op, args, "all"] as const,
    queryFn: ({ signal }) => allPages(op, args, items, signal),
    ...opts,
  });
}
