-- Tessera directory schema.
--
-- One dialect that both SQLite and PostgreSQL accept, so the same migration serves the embedded default
-- and the server database:
--   * ids are BIGINT primary keys chosen by the application (SQLite's AUTOINCREMENT and PostgreSQL's
--     BIGSERIAL/IDENTITY have no common spelling);
--   * times are BIGINT unix seconds (no common timestamp type that sqlx's Any driver decodes on both);
--   * booleans are BIGINT 0/1 with a CHECK (the Any driver cannot decode SQLite integers as bool);
--   * JSON documents are TEXT.

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    email TEXT,
    display_name TEXT,
    department TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE groups (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE roles (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE user_groups (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);

CREATE INDEX user_groups_by_group ON user_groups (group_id);

CREATE TABLE user_roles (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id BIGINT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);

CREATE INDEX user_roles_by_role ON user_roles (role_id);

CREATE TABLE service_providers (
    id BIGINT PRIMARY KEY,
    entity_id TEXT NOT NULL UNIQUE,
    metadata_xml TEXT NOT NULL,
    display_name TEXT NOT NULL,
    nameid_format TEXT NOT NULL,
    nameid_attribute TEXT NOT NULL,
    attribute_release TEXT NOT NULL DEFAULT '[]',
    sign_assertion BIGINT NOT NULL CHECK (sign_assertion IN (0, 1)),
    sign_response BIGINT NOT NULL CHECK (sign_response IN (0, 1)),
    encrypt_assertion BIGINT NOT NULL CHECK (encrypt_assertion IN (0, 1)),
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    allow_sha1 BIGINT NOT NULL CHECK (allow_sha1 IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE app_assignments (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sp_id BIGINT NOT NULL REFERENCES service_providers (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, sp_id)
);

CREATE INDEX app_assignments_by_sp ON app_assignments (sp_id);
