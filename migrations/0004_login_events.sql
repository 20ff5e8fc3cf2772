-- Sign-in and SSO events, starting with refusals by the access policy (IP allowlists, security
-- policies). Same dialect rules as 0001 (application-chosen BIGINT ids, TEXT JSON), except that `at` is
-- in unix milliseconds so that events keep their order.
CREATE TABLE login_events (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    -- The username as typed or as known from the session; the user may not exist.
    username TEXT NOT NULL,
    user_id BIGINT,
    ip TEXT NOT NULL,
    -- The SP's entityID, when the attempt was an SSO to an SP.
    sp TEXT,
    -- What happened, e.g. 'ip_denied', 'policy_not_met'.
    outcome TEXT NOT NULL,
    -- Why, for people: which rules refused, what is missing.
    reason TEXT NOT NULL
);

CREATE INDEX login_events_at ON login_events (at);
CREATE INDEX login_events_username_at ON login_events (username, at);
CREATE INDEX login_events_outcome_at ON login_events (outcome, at);
