import { useState } from "react";
import { deadLettersPageSize, replayedMessage, useDeadLetters, useReplayDeadLetters } from "../api/events";
import type { Connection } from "../api/schema.gen";
import { when } from "../format";
import { ConfirmDialog } from "./ConfirmDialog";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { GuardedButton } from "./Guarded";
import { ListStatus } from "./ListStatus";
import { ListPager, usePageTokens } from "./Pager";

/** Events a sink gave up on, with the reason; replay one, or all of a sink (or every sink). */
export function DeadLetters({ connections }: { connections: readonly Connection[] }) {
  const [sink, setSink] = useState("");
  const [includeReplayed, setIncludeReplayed] = useState(false);
  const [confirmAll, setConfirmAll] = useState(false);
  const [result, setResult] = useState("");
  const pages = usePageTokens();
  const list = useDeadLetters(sink, includeReplayed, pages.token);
  const replay = useReplayDeadLetters();
  const name = (id = "") => connections.find((c) => c.connection_id === id)?.name ?? id;
  const items = list.data?.dead_letters ?? [];
  const scope = sink ? `of ${name(sink)}` : "of every sink";

  function replayOne(id: string) {
    setResult("");
    replay.mutate({ body: { dead_letter_ids: [id] } }, { onSuccess: (a) => setResult(replayedMessage(a.replayed, "one")) });
  }
  function replayAll() {
    setResult("");
    replay.mutate(
      { body: { connection_id: sink || undefined } },
      {
        onSuccess: (a) => {
          setResult(replayedMessage(a.replayed, "all"));
          setConfirmAll(false);
        },
      },
    );
  }

  return (
    <>
      <div className="toolbar">
        <Field label="Sink">
          <select
            value={sink}
            onChange={(e) => {
              setSink(e.target.value);
              pages.reset();
            }}
          >
            <option value="">Every sink</option>
            {connections.map((c) => (
              <option key={c.connection_id} value={c.connection_id}>
                {c.name}
              </option>
            ))}
          </select>
        </Field>
        <label className="toggle">
          <input
            type="checkbox"
            checked={includeReplayed}
            onChange={(e) => {
              setIncludeReplayed(e.target.checked);
              pages.reset();
            }}
          />
          Show replayed ones too
        </label>
        <GuardedButton
          op="EventRelayService_ReplayDeadLetters"
          onClick={() => setConfirmAll(true)}
          disabled={items.length === 0}
        >
          Replay all {scope}…
        </GuardedButton>
      </div>
      <p role="status" aria-live="polite">
        {result}
      </p>
      {!confirmAll && <ErrorNotice error={replay.error} />}
      <ListStatus
        error={list.error}
        empty={!!list.data && items.length === 0 && pages.page === 1}
        title={includeReplayed ? "No dead letters." : "No dead letter is waiting."}
      >
        <p>Events land here when a sink refuses them for good or retries run out; the reason says what to fix before replaying.</p>
      </ListStatus>
      {items.length > 0 && (
        <table>
          <caption className="muted table-caption">
            {deadLettersPageSize} a page.
          </caption>
          <thead>
            <tr>
              <th>Event</th>
              <th>Sink</th>
              <th>Reason</th>
              <th className="num">Attempts</th>
              <th>Given up</th>
              <th>
                <span className="sr-only">Replay</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {items.map((d) => (
              <tr key={d.dead_letter_id}>
                <td>
                  {d.event?.name}
                  <div className="muted">
                    {d.event?.source} · user {d.event?.user_id}
                  </div>
                </td>
                <td>{name(d.connection_id)}</td>
                <td>{d.reason}</td>
                <td className="num">{d.attempts ?? 0}</td>
                <td>{when(d.dead_time)}</td>
                <td>
                  {d.replay_time ? (
                    <span className="muted">Replayed {when(d.replay_time)}</span>
                  ) : (
                    <GuardedButton
                      op="EventRelayService_ReplayDeadLetters"
                      aria-label={`Replay ${d.event?.name ?? "event"} for ${d.event?.user_id ?? "user"}`}
                      disabled={replay.isPending}
                      onClick={() => replayOne(d.dead_letter_id ?? "")}
                    >
                      Replay
                    </GuardedButton>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ListPager label="Dead letter pages" pages={pages} list={list} />
      <ConfirmDialog
        title={`Replay every dead letter ${scope}?`}
        open={confirmAll}
        onClose={() => setConfirmAll(false)}
        error={replay.error}
        confirmLabel="Replay all"
        tone="primary"
        pending={replay.isPending}
        onConfirm={replayAll}
      >
        <p>Each waiting dead letter goes back to its sink's queue and is delivered again, in order per user.</p>
      </ConfirmDialog>
    </>
  );
}
