-- Delegated administration and the admin API: who holds which admin role, the API tokens, and the
-- audit trail of admin changes. Same dialect conventions as 0001 (application-chosen BIGINT ids, BIGINT
-- unix seconds, JSON as TEXT), except that audit times are unix milliseconds so entries keep their order.

-- One row per admin role a user holds. An app admin holds the role for one SP (sp_id), the other roles
-- are global (sp_id NULL). Deleting the user or the SP removes the grant.
CREATE TABLE admin_grants (
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('super_admin', 'org_admin', 'app_admin', 'helpdesk')),
    sp_id BIGINT REFERENCES service_providers (id) ON DELETE CASCADE,
    -- Who granted it ('console' for the CLI, else the admin's username), for the listing.
    granted_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK ((role = 'app_admin' AND sp_id IS NOT NULL) OR (role <> 'app_admin' AND sp_id IS NULL))
);

CREATE UNIQUE INDEX admin_grants_unique ON admin_grants (user_id, role, COALESCE(sp_id, 0));

-- API tokens. Only the SHA-256 of the token is kept (hex): the token itself is shown once, at creation.
CREATE TABLE api_tokens (
    id BIGINT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    -- JSON array of ranges the token may be used from, or NULL for no restriction of its own (the
    -- owner's IP allowlists apply in any case).
    ip_ranges TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used BIGINT
);

CREATE INDEX api_tokens_by_owner ON api_tokens (owner_id);

-- Every change made through the admin API (and admin grants made at the console). No foreign keys: the
-- trail outlives the users and items it names.
CREATE TABLE admin_audit (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    -- 'user:<username>' or 'console'.
    actor TEXT NOT NULL,
    -- e.g. 'user.create', 'ip_rule.delete', 'grant.create'.
    action TEXT NOT NULL,
    -- What was changed, e.g. 'user:alice', 'sp:https://app.example/metadata'.
    target TEXT NOT NULL,
    -- JSON of the item before and after the change (NULL when it did not exist).
    before_json TEXT,
    after_json TEXT,
    -- The client address of the request ('' at the console).
    client_ip TEXT NOT NULL
);

CREATE INDEX admin_audit_at ON admin_audit (at);
