-- Conditional app assignment: rules that grant SPs to users by their attributes, groups and roles,
-- evaluated at every check (no per-user rows, no batch job). Same dialect conventions as 0001
-- (application-chosen BIGINT ids, BIGINT unix seconds, BIGINT 0/1 booleans, JSON as TEXT).

CREATE TABLE assignment_rules (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- JSON: {"any": [{"all": [{"attribute": {"name": "department", "values": ["Sales"]}},
    --                         {"group": "sales-emea"}, {"role": "manager"}]}]}
    condition TEXT NOT NULL,
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    -- 'cli' rules are managed with `tessera assignment-rule` (and the admin API); 'config' rules are
    -- reconciled from tessera.toml at every start and cannot be changed elsewhere.
    source TEXT NOT NULL CHECK (source IN ('cli', 'config')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The SPs a rule grants, by entityID: like policy assignments, a target is a name, so removing and
-- re-adding an SP keeps the rule's meaning and the compiled set never disagrees with these rows.
CREATE TABLE assignment_rule_targets (
    rule_id BIGINT NOT NULL REFERENCES assignment_rules (id) ON DELETE CASCADE,
    entity_id TEXT NOT NULL,
    PRIMARY KEY (rule_id, entity_id)
);

CREATE INDEX assignment_rule_targets_by_entity ON assignment_rule_targets (entity_id);

-- Bumped in the same transaction as every change above, so a server polls one row and rebuilds its
-- compiled rule set only when something changed.
CREATE TABLE assignment_rule_generation (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);

INSERT INTO assignment_rule_generation (id, generation) VALUES (1, 0);
