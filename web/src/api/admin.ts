// Hooks for the Admin section: environments and API keys.
import { useOp, useOpMutation, usePagedOp } from "./hooks";

export function useEnvironments(enabled: boolean) {
  return useOp("AdminService_ListEnvironments", {}, { enabled });
}

export const apiKeysPageSize = 50;

export function useApiKeysPage(includeRevoked: boolean, pageToken: string, enabled: boolean) {
  return usePagedOp(
    "AdminService_ListApiKeys",
    { query: { include_revoked: includeRevoked || undefined, page_size: apiKeysPageSize, page_token: pageToken || undefined } },
    { enabled },
  );
}

export const useCreateEnvironment = () => useOpMutation("AdminService_CreateEnvironment", ["AdminService_ListEnvironments"]);
export const useCreateApiKey = () => useOpMutation("AdminService_CreateApiKey", ["AdminService_ListApiKeys"]);
export const useRevokeApiKey = () => useOpMutation("AdminService_RevokeApiKey", ["AdminService_ListApiKeys"]);
