// Hooks for the Integrations section: the destination catalogue, connections
// and the user properties an identity property is picked from.
import type { Connection } from "./schema.gen";
import { useAllPages, useOp, useOpMutation } from "./hooks";

export function useDestinationTypes() {
  return useOp("ConnectorService_ListDestinationTypes", {}, { staleTime: 5 * 60_000 });
}

export function useConnections() {
  return useAllPages("ConnectorService_ListConnections", {}, (a) => a.connections);
}

export function useConnection(connectionId: string) {
  return useOp("ConnectorService_GetConnection", { path: { connection_id: connectionId } });
}

/** The property names seghub holds, with types and how many users hold each. */
export function useUserProperties() {
  return useOp("SegmentSyncService_ListUserProperties", {}, { staleTime: 60_000 });
}

const connectionReads = ["ConnectorService_ListConnections", "ConnectorService_GetConnection"] as const;

export const useCreateConnection = () => useOpMutation("ConnectorService_CreateConnection", connectionReads);
export const useStartAuthorization = () => useOpMutation("ConnectorService_StartAuthorization");
export const useUpdateConnection = () => useOpMutation("ConnectorService_UpdateConnection", connectionReads);
export const useDeleteConnection = () =>
  useOpMutation("ConnectorService_DeleteConnection", [...connectionReads, "SegmentSyncService_ListSyncs"]);

/** Where an inbound source posts: the gateway's own origin plus the connection's webhook path. */
export function webhookURL(c: Connection, origin = window.location.origin): string {
  return c.webhook_path ? origin + c.webhook_path : "";
}
