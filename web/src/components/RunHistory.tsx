import { useSyncRuns } from "../api/segments";
import { count, enumWord, when } from "../format";
import { ListStatus } from "./ListStatus";
import { ListPager, usePageTokens } from "./Pager";
import { SyncStatus } from "./SyncStatus";

/** A sync's runs, newest first: added, removed, unmatched, failed (with who and why). */
export function RunHistory({ syncId, running }: { syncId: string; running: boolean }) {
  const pages = usePageTokens();
  const runs = useSyncRuns(syncId, pages.token, running);
  const list = runs.data?.runs ?? [];
  return (
    <div>
      <h3>Run history</h3>
      <ListStatus error={runs.error} empty={!!runs.data && list.length === 0} title="No runs yet.">Press “Sync now” to run it.</ListStatus>
      {list.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Started</th>
              <th>Trigger</th>
              <th>Status</th>
              <th className="num">Added</th>
              <th className="num">Removed</th>
              <th className="num">Unmatched</th>
              <th className="num">Failed</th>
            </tr>
          </thead>
          <tbody>
            {list.map((r) => (
              <tr key={r.run_id}>
                <td>{when(r.start_time || r.create_time)}</td>
                <td>{enumWord(r.trigger, "SYNC_RUN_TRIGGER_")}</td>
                <td>
                  {r.status && <SyncStatus status={r.status} />}
                  {r.error && <div className="status-bad">{r.error}</div>}
                </td>
                <td className="num">{count(r.added)}</td>
                <td className="num">{count(r.removed)}</td>
                <td className="num">{count(r.unmatched)}</td>
                <td className="num">
                  {count(r.failed)}
                  {Number(r.retried ?? 0) > 0 && <div className="muted">{count(r.retried)} retried</div>}
                  {(r.failed_identities?.length ?? 0) > 0 && (
                    <details>
                      <summary>Who and why</summary>
                      <ul className="failed-list">
                        {r.failed_identities!.map((f) => (
                          <li key={`${f.user_id}-${f.removal}`}>
                            {f.user_id} ({f.identity}, {f.removal ? "removal" : "add"}): {f.reason}
                          </li>
                        ))}
                      </ul>
                    </details>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ListPager label="Run history pages" pages={pages} list={runs} />
    </div>
  );
}
