import { CopyButton } from "./CopyButton";

/** A webhook URL and its signing secret, shown only this once. */
export function SecretOnce({ url, secret }: { url: string; secret: string }) {
  return (
    <div className="notice">
      <p>
        <strong>Copy the signing secret now: seghub shows it only once.</strong> Configure the sending tool to post to
        this URL and sign each request with the secret.
      </p>
      {url && (
        <>
          <h3>Webhook URL</h3>
          <p className="secret" id="webhook-url">
            {url}
          </p>
          <CopyButton text={url} label="Copy webhook URL" />
        </>
      )}
      <h3>Signing secret</h3>
      <p className="secret" id="signing-secret">
        {secret}
      </p>
      <CopyButton text={secret} label="Copy signing secret" />
    </div>
  );
}
