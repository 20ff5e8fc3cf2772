-- Second factors (TOTP, WebAuthn, recovery codes) and their audit trail.
--
-- Same dialect conventions as 0001_directory.sql: application-chosen BIGINT ids, BIGINT unix-second
-- times, JSON as TEXT. Secrets never appear in clear: TOTP secrets are sealed (AES-256-GCM under a key
-- from the configuration), recovery codes are keyed hashes.

-- At most one pending and one active TOTP factor per user: a new enrolment waits as 'pending' beside
-- the active one until a correct code promotes it.
CREATE TABLE mfa_totp (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'active')),
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activated_at BIGINT,
    -- Highest accepted time step: later codes must be newer (RFC 6238 5.2, no replay).
    last_used_step BIGINT,
    PRIMARY KEY (user_id, state)
);

-- WebAuthn credentials, several per user, each with a name unique for its user. credential_id is the
-- base64url credential id, unique across users; credential is the library's JSON serialization.
CREATE TABLE mfa_webauthn (
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    credential_id TEXT NOT NULL UNIQUE,
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used BIGINT,
    UNIQUE (user_id, name)
);

-- Recovery codes as keyed hashes; used_at is set once, by a conditional UPDATE.
CREATE TABLE mfa_recovery_codes (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Audit trail of factor changes. No foreign key on user_id: the trail outlives a deleted user.
-- seq orders events within the same second.
CREATE TABLE mfa_events (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('enrolled', 'removed', 'reset', 'recovery_regenerated', 'recovery_used')),
    detail TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX mfa_events_by_user ON mfa_events (user_id, seq);
CREATE INDEX mfa_events_by_seq ON mfa_events (seq);
