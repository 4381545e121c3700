import { useId, type ButtonHTMLAttributes, type ReactNode } from "react";
import type { OperationId } from "../api/client";
import { useAccess } from "../session/SessionContext";

/**
 * A button for an operation the key's role may not call is shown read-only
 * with the reason, never as a button that ends in 403.
 */
export function GuardedButton({
  op,
  children,
  sharedReasonId,
  ...rest
}: {
  op: OperationId;
  children: ReactNode;
  /** In a table, each row's button points at one reason shown once (GuardReason) instead of repeating it. */
  sharedReasonId?: string;
} & ButtonHTMLAttributes<HTMLButtonElement>) {
  const access = useAccess();
  const reasonId = useId();
  const reason = access.reasonFor(op);
  if (!reason) return <button type="button" {...rest}>{children}</button>;
  if (sharedReasonId) {
    return (
      <button type="button" {...rest} disabled aria-describedby={sharedReasonId} onClick={undefined}>
        {children}
      </button>
    );
  }
  return (
    <span className="guarded">
      <button type="button" {...rest} disabled aria-describedby={reasonId} onClick={undefined}>
        {children}
      </button>
      <small id={reasonId} className="reason">
        {reason}
      </small>
    </span>
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

/** The reason, shown once, why op's buttons below are read-only; nothing when the role may call op. */
export function GuardReason({ op, id }: { op: OperationId; id: string }) {
  const reason = useAccess().reasonFor(op);
  if (!reason) return null;
  return (
    <p id={id} className="reason">
      {reason}
    </p>
  );
}
