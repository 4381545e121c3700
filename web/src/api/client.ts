// The console's only way to the REST API: typed by the generated contract,
// authenticated by the session's key, errors decoded into ApiError.
import { operations, type Operations } from "./schema.gen";

export type OperationId = keyof Operations;

/** Arguments of one operation: path parameters, query and body as the contract declares them. */
export type CallArgs<K extends OperationId> = ([Operations[K]["pathParams"]] extends [never]
  ? { path?: undefined }
  : { path: Operations[K]["pathParams"] }) &
  ([Operations[K]["query"]] extends [never] ? { query?: undefined } : { query?: Operations[K]["query"] }) &
  ([Operations[K]["body"]] extends [never] ? { body?: undefined } : { body: Operations[K]["body"] });

export type Answer<K extends OperationId> = Operations[K]["response"];

/** gRPC code names, as the gateway's JSON error carries them by number. */
const codeNames = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
] as const;
export type CodeName = (typeof codeNames)[number];

/** An answer other than 2xx, in the server's words. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: CodeName;
  /** errdetails.BadRequest field violations: field path → descriptions. */
  readonly fieldViolations: Readonly<Record<string, readonly string[]>>;

  constructor(status: number, code: CodeName, message: string, fieldViolations: Record<string, string[]> = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.fieldViolations = fieldViolations;
  }

  /** The violation(s) on one field, or on any field below it ("credentials" matches "credentials.api_key"). */
  violationsFor(field: string): string[] {
    const out: string[] = [];
    for (const [f, ds] of Object.entries(this.fieldViolations)) {
      if (f === field || f.startsWith(field + ".") || f.startsWith(field + "[")) out.push(...ds);
    }
    return out;
  }
}

/** Decodes the gateway's error body (google.rpc.Status as JSON) into an ApiError. */
export function decodeError(status: number, body: unknown): ApiError {
  const b = (body ?? {}) as { code?: number; message?: string; details?: Array<Record<string, unknown>> };
  const code: CodeName =
    typeof b.code === "number" && codeNames[b.code] ? codeNames[b.code]! : status === 401 ? "UNAUTHENTICATED" : "UNKNOWN";
  const violations: Record<string, string[]> = {};
  for (const d of b.details ?? []) {
    if (typeof d["@type"] !== "string" || !d["@type"].endsWith("google.rpc.BadRequest")) continue;
    const list = (d["field_violations"] ?? d["fieldViolations"]) as Array<{ field?: string; description?: string }> | undefined;
    for (const v of list ?? []) {
      const f = v.field ?? "";
      (violations[f] ??= []).push(v.description ?? "invalid");
    }
  }
  const message = b.message?.trim() || `The server answered ${status} without a message.`;
  return new ApiError(status, code, message, violations);
}

/** Builds the request URL of op: path parameters substituted and escaped, query appended. */
export function operationURL<K extends OperationId>(op: K, args: CallArgs<K>): string {
  const { path } = operations[op];
  const params = (args.path ?? {}) as Record<string, string>;
  const url = path.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const v = params[name];
    if (v === undefined || v === "") throw new Error(`${op}: path parameter ${name} is missing`);
    return encodeURIComponent(v);
  });
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries((args.query ?? {}) as Record<string, unknown>)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, String(x)));
    else q.append(k, String(v));
  }
  const qs = q.toString();
  return qs ? `${url}?${qs}` : url;
}

export interface Transport {
  /** The key to send, or undefined when signed out. */
  key(): string | undefined;
  /** Called when the server refuses the key (revoked, or never valid). */
  onUnauthenticated?(): void;
  fetch?: typeof fetch;
}

let transport: Transport = { key: () => undefined };

/** Sets where keys come from; the session does this once at start. */
export function setTransport(t: Transport): void {
  transport = t;
}

/** Calls one REST operation. Components never call this: they use the hooks in ./hooks. */
export async function call<K extends OperationId>(
  op: K,
  args: CallArgs<K>,
  opts: { signal?: AbortSignal; key?: string } = {},
): Promise<Answer<K>> {
  const { method } = operations[op];
  const key = opts.key ?? transport.key();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let body: string | undefined;
  if (args.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(args.body);
  }
  const f = transport.fetch ?? fetch;
  let res: Response;
  try {
    res = await f(operationURL(op, args), { method, headers, body, signal: opts.signal, credentials: "omit" });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "UNAVAILABLE", "seghub did not answer: check that it is running and reachable.");
  }
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { message: text.slice(0, 300) };
    }
  }
  if (!res.ok) {
    const err = decodeError(res.status, parsed);
    if (err.code === "UNAUTHENTICATED" && !opts.key) transport.onUnauthenticated?.();
    throw err;
  }
  return (parsed ?? {}) as Answer<K>;
}
