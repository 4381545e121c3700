import { useId, type ButtonHTMLAttributes, type ReactNode } from "react";
import type { OperationId } from "../api/client";
import { operationAccess } from "../api/schema.gen";
import { useAccess } from "../session/SessionContext";

/**
 * A button for an operation the key's role may not call is shown read-only
 * with the reason, never as a button that ends in 403.
 */
export function GuardedButton({
  op,
  children,
  ...rest
}: { op: OperationId; children: ReactNode } & ButtonHTMLAttributes<HTMLButtonElement>) {
  const access = useAccess();
  const reasonId = useId();
  const reason = access.reasonFor(op);
  if (!reason) return <button type="button" {...rest}>{children}</button>;
  return (
    <span className="guarded">
      <button type="button" {...rest} disabled aria-describedby={reasonId} onClick={undefined}>
        {children}
      </button>
      <small id={reasonId} className="reason">
        {short(op, reason)}
        <span className="sr-only">: {reason}</span>
      </small>
    </span>
  );
}

// Beside a button the reason is short; the page's RoleNotice and screen
// readers (aria-describedby) get it whole.
function short(op: OperationId, reason: string): string {
  return operationAccess[op] === "ADMIN" ? "Admins only" : reason;
}

/** Says once, at the top of a page, what a non-admin key can and cannot do here. */
export function RoleNotice({ children }: { children: ReactNode }) {
  const access = useAccess();
  if (access.isAdmin) return null;
  return (
    <p className="notice" role="note">
      {access.adminOnlyReason} {children}
    </p>
  );
}

/** A form section for an operation: disabled, with the reason, when the role may not call it. */
export function GuardedFieldset({ op, legend, children }: { op: OperationId; legend?: ReactNode; children: ReactNode }) {
  const access = useAccess();
  const reason = access.reasonFor(op);
  return (
    <fieldset disabled={!!reason} className="guarded-fieldset">
      {legend && <legend>{legend}</legend>}
      {reason && <p className="reason">{reason}</p>}
      {children}
    </fieldset>
  );
}
