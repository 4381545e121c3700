import { enumWord } from "../format";

/** A run's status in words, coloured by outcome. */
export function SyncStatus({ status }: { status: string }) {
  const word = enumWord(status, "SYNC_RUN_STATUS_");
  const cls = status === "SYNC_RUN_STATUS_SUCCEEDED" ? "status-ok" : status === "SYNC_RUN_STATUS_FAILED" ? "status-bad" : "status-warn";
  return <span className={cls}>({word})</span>;
}
