import { useId, type ReactElement, type ReactNode } from "react";
import { cloneElement } from "react";

/**
 * A labelled form control with its hint and the server's violations on it.
 * The child control gets id, aria-describedby and aria-invalid wired up.
 */
export function Field({
  label,
  hint,
  errors = [],
  children,
}: {
  label: ReactNode;
  hint?: ReactNode;
  errors?: readonly string[];
  children: ReactElement<Record<string, unknown>>;
}) {
  const id = useId();
  const hintId = `${id}-hint`;
  const errId = `${id}-err`;
  const described = [hint ? hintId : "", errors.length ? errId : ""].filter(Boolean).join(" ") || undefined;
  return (
    <div className={errors.length ? "field field-invalid" : "field"}>
      <label htmlFor={id}>{label}</label>
      {cloneElement(children, { id, "aria-describedby": described, "aria-invalid": errors.length > 0 || undefined })}
      {hint && (
        <small id={hintId} className="hint">
          {hint}
        </small>
      )}
      {errors.length > 0 && (
        <small id={errId} className="field-error" role="alert">
          {errors.join(" ")}
        </small>
      )}
    </div>
  );
}
