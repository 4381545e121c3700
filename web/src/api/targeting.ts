// Hooks for the Targeting section: experiences, the segments an audience may
// name, and what the index answers for one user.
import type { ExperienceType } from "./schema.gen";
import { useQueries } from "@tanstack/react-query";
import { call } from "./client";
import { useAllPages, useOp, useOpMutation, usePagedOp } from "./hooks";

export const experiencesPageSize = 50;

export function useExperiencesPage(type: ExperienceType, pageToken: string) {
  return usePagedOp("TargetingService_ListExperiences", {
    query: { type, page_size: experiencesPageSize, page_token: pageToken || undefined },
  });
}

export function useExperience(experienceId: string) {
  return useOp("TargetingService_GetExperience", { path: { experience_id: experienceId } }, { enabled: !!experienceId });
}

/** Every experience of every type (for "check a user"). */
export function useAllExperiences(enabled = true) {
  return useAllPages("TargetingService_ListExperiences", {}, (a) => a.experiences, { enabled });
}

/** Public, non-empty segments: the only ones an audience may offer. */
export function useTargetableSegments() {
  return useAllPages("TargetingService_ListTargetableSegments", {}, (a) => a.segments);
}

export function useUserSegments(userId: string) {
  return useOp("TargetingService_ListUserSegments", { path: { user_id: userId } }, { enabled: !!userId });
}

const experienceReads = ["TargetingService_ListExperiences", "TargetingService_GetExperience"] as const;
export const useCreateExperience = () => useOpMutation("TargetingService_CreateExperience", experienceReads);
export const useUpdateExperience = () => useOpMutation("TargetingService_UpdateExperience", experienceReads);
export const useDeleteExperience = () => useOpMutation("TargetingService_DeleteExperience", experienceReads);

export const experienceTypes: readonly { type: ExperienceType; plural: string; singular: string; slug: string }[] = [
  { type: "EXPERIENCE_TYPE_PRODUCT_TOUR", plural: "Product tours", singular: "product tour", slug: "tours" },
  { type: "EXPERIENCE_TYPE_CHECKLIST", plural: "Checklists", singular: "checklist", slug: "checklists" },
  { type: "EXPERIENCE_TYPE_GENERIC", plural: "Other experiences", singular: "experience", slug: "other" },
];

export function experienceTypeOf(slug: string | undefined) {
  return experienceTypes.find((t) => t.slug === slug);
}

export function singularOf(type: ExperienceType | undefined): string {
  return experienceTypes.find((t) => t.type === type)?.singular ?? "experience";
}

/** Each experience's verdict for one user, with the condition that decided. */
export function useEvaluations(userId: string, experienceIds: readonly string[]) {
  return useQueries({
    queries: experienceIds.map((id) => ({
      queryKey: ["TargetingService_EvaluateExperience", { path: { experience_id: id, user_id: userId } }] as const,
      queryFn: ({ signal }: { signal: AbortSignal }) =>
        call("TargetingService_EvaluateExperience", { path: { experience_id: id, user_id: userId } }, { signal }),
      enabled: !!userId,
    })),
  });
}

/** Names of segments by id (private ones too, which ListTargetableSegments leaves out); at most 50 looked up. */
export function useSegmentNames(segmentIds: readonly string[]) {
  const qs = useQueries({
    queries: segmentIds.slice(0, 50).map((id) => ({
      queryKey: ["SegmentSyncService_GetSegment", { path: { segment_id: id } }] as const,
      queryFn: ({ signal }: { signal: AbortSignal }) => call("SegmentSyncService_GetSegment", { path: { segment_id: id } }, { signal }),
      staleTime: 60_000,
    })),
  });
  const names = new Map<string, string>();
  for (const q of qs) {
    const s = q.data?.segment;
    if (s?.segment_id && s.name) names.set(s.segment_id, s.name);
  }
  return names;
}

/** An experience's page, under its type's tab. */
export function experiencePath(e: { experience_id?: string; type?: ExperienceType }): string {
  const slug = experienceTypes.find((t) => t.type === e.type)?.slug ?? "other";
  return `/targeting/${slug}/${e.experience_id ?? ""}`;
}
