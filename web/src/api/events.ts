// Hooks for the Events section: sources' schemas, routes, sinks and dead letters.
import { useAllPages, useOp, useOpMutation, usePagedOp } from "./hooks";

export function useEventSchemas() {
  return useOp("EventRelayService_ListEventSchemas", {}, { staleTime: 5 * 60_000 });
}

export function useRoutes() {
  return useAllPages("EventRelayService_ListRoutes", {}, (a) => a.routes);
}

/** Sinks, refetched every few seconds so backlog and delivered counts move on screen. */
export function useSinks(pollMs = 3000) {
  return useOp("EventRelayService_ListSinks", {}, { refetchInterval: pollMs });
}

export const deadLettersPageSize = 25;

export function useDeadLetters(connectionId: string, includeReplayed: boolean, pageToken: string) {
  return usePagedOp("EventRelayService_ListDeadLetters", {
    query: {
      connection_id: connectionId || undefined,
      include_replayed: includeReplayed || undefined,
      page_size: deadLettersPageSize,
      page_token: pageToken || undefined,
    },
  });
}

const relayReads = ["EventRelayService_ListRoutes", "EventRelayService_ListSinks"] as const;
export const useCreateRoute = () => useOpMutation("EventRelayService_CreateRoute", relayReads);
export const useDeleteRoute = () => useOpMutation("EventRelayService_DeleteRoute", relayReads);
export const useReplayDeadLetters = () =>
  useOpMutation("EventRelayService_ReplayDeadLetters", ["EventRelayService_ListDeadLetters", "EventRelayService_ListSinks"]);

/** The answer of a replay in words: how many dead letters went back to their sink. */
export function replayedMessage(replayed: number | undefined, asked: "one" | "all"): string {
  const n = replayed ?? 0;
  if (n === 0) {
    return asked === "one"
      ? "Nothing was replayed: this dead letter was already replayed or is gone."
      : "Nothing was replayed: no dead letter is waiting.";
  }
  return `Replayed ${n.toLocaleString("en-US")} dead letter${n === 1 ? "" : "s"}; they are back in their sink's queue.`;
}
