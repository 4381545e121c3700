-- Credential writes compare and swap on this version, so a writer holding
-- credentials read earlier (a token refresh, a key rotation) never puts
-- them back over newer ones.
ALTER TABLE cn_connections ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 1;

-- A state is bound to the browser that started the flow: the hash of the
-- nonce in its seghub_oauth cookie. Used states are deleted, expired ones
-- swept by expiry.
ALTER TABLE cn_oauth_states ADD COLUMN browser_hash TEXT NOT NULL DEFAULT '';
CREATE INDEX cn_oauth_states_expires ON cn_oauth_states (expires_at);
