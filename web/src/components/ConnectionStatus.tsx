import type { Connection } from "../api/schema.gen";
import { when } from "../format";

const words = {
  CONNECTION_STATUS_CONNECTED: ["Connected", "status-ok"],
  CONNECTION_STATUS_NEEDS_REAUTH: ["Needs re-authorization", "status-warn"],
  CONNECTION_STATUS_ERROR: ["Error", "status-bad"],
  CONNECTION_STATUS_UNSPECIFIED: ["Unknown", "muted"],
} as const;

/** Connected / needs re-auth / error, with the last error and when it happened. */
export function ConnectionStatus({ connection, detail = false }: { connection: Connection; detail?: boolean }) {
  const [label, cls] = words[connection.status ?? "CONNECTION_STATUS_UNSPECIFIED"];
  return (
    <span>
      <strong className={cls}>{label}</strong>
      {detail && connection.last_error && (
        <span className="status-bad">
          {" "}
          — {connection.last_error} ({when(connection.last_error_time)})
        </span>
      )}
    </span>
  );
}
