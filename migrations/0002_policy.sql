-- Access policy: IP allowlist rules, security policies (risk tiers), their assignments, and per-SP access
-- requirements. Same dialect conventions as 0001 (application-chosen BIGINT ids, BIGINT unix seconds,
-- BIGINT 0/1 booleans, JSON as TEXT).
--
-- `source` says who owns a row: 'cli' rows are managed with `tessera ip-rule` / `tessera policy`,
-- 'config' rows are reconciled from tessera.toml at every start and cannot be changed from the CLI.

CREATE TABLE ip_rules (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- JSON array of ranges as written: "10.0.0.0/8", "2001:db8::1", "192.0.2.10-192.0.2.20".
    ranges TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('everyone', 'roles', 'groups', 'users')),
    -- JSON array of role, group or user names; empty for 'everyone'.
    scope_names TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL CHECK (source IN ('cli', 'config')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE security_policies (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mfa_required BIGINT NOT NULL CHECK (mfa_required IN (0, 1)),
    -- JSON array of "totp", "webauthn", "recovery_code".
    mfa_methods TEXT NOT NULL,
    session_absolute_secs BIGINT NOT NULL,
    session_idle_secs BIGINT NOT NULL,
    reauth_interval_secs BIGINT,
    password_min_length BIGINT NOT NULL,
    -- JSON array of ranges, or NULL for no allowlist of the policy's own.
    ip_ranges TEXT,
    is_default BIGINT NOT NULL CHECK (is_default IN (0, 1)),
    source TEXT NOT NULL CHECK (source IN ('cli', 'config')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- At most one default policy.
CREATE UNIQUE INDEX security_policies_one_default ON security_policies (is_default) WHERE is_default = 1;

-- One assignment per user, group or role; targets are names so a rule survives until the name goes.
CREATE TABLE policy_assignments (
    target_kind TEXT NOT NULL CHECK (target_kind IN ('user', 'group', 'role')),
    target_name TEXT NOT NULL,
    policy_id BIGINT NOT NULL REFERENCES security_policies (id) ON DELETE CASCADE,
    priority BIGINT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('cli', 'config')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (target_kind, target_name)
);

CREATE INDEX policy_assignments_by_policy ON policy_assignments (policy_id);

-- What an SP requires on top of the user's rules and policy.
CREATE TABLE sp_access (
    sp_id BIGINT PRIMARY KEY REFERENCES service_providers (id) ON DELETE CASCADE,
    -- JSON array of ranges, or NULL for no allowlist of the SP's own.
    ip_ranges TEXT,
    require_mfa BIGINT NOT NULL CHECK (require_mfa IN (0, 1)),
    mfa_within_secs BIGINT,
    updated_at BIGINT NOT NULL
);

-- Bumped in the same transaction as every change above, so a server can poll one row and rebuild its
-- compiled policy set only when something changed.
CREATE TABLE policy_generation (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);

INSERT INTO policy_generation (id, generation) VALUES (1, 0);
