import type { ReactNode } from "react";
import { Dialog } from "./Dialog";
import { ErrorNotice } from "./ErrorNotice";

/**
 * Asks before a consequential action: what it does (children), why it failed,
 * Cancel, and the action, disabled while it runs.
 */
export function ConfirmDialog({
  title,
  open,
  onClose,
  error,
  confirmLabel,
  pending,
  onConfirm,
  tone = "danger",
  children,
}: {
  title: string;
  open: boolean;
  onClose: () => void;
  error: unknown;
  confirmLabel: string;
  pending: boolean;
  onConfirm: () => void;
  /** "primary" when confirming loses nothing (a replay), "danger" when it does. */
  tone?: "danger" | "primary";
  children: ReactNode;
}) {
  return (
    <Dialog title={title} open={open} onClose={onClose}>
      {children}
      <ErrorNotice error={error} />
      <div className="dialog-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" className={tone} disabled={pending} onClick={onConfirm}>
          {confirmLabel}
        </button>
      </div>
    </Dialog>
  );
}
