import { ApiError } from "../api/client";

/** An API error in the server's words, next to what caused it. */
export function ErrorNotice({ error, extra = [] }: { error: unknown; extra?: readonly string[] }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  const code = error instanceof ApiError && error.code !== "UNKNOWN" ? error.code : "";
  return (
    <div className="error" role="alert">
      <p>
        {message}
        {code && <span className="error-code"> ({code.toLowerCase().replace(/_/g, " ")})</span>}
      </p>
      {extra.length > 0 && (
        <ul>
          {extra.map((e) => (
            <li key={e}>{e}</li>
          ))}
        </ul>
      )}
    </div>
  );
}
