-- Password policy (history, maximum age), security questions and account recovery. Same dialect
-- conventions as 0001 (application-chosen BIGINT ids, BIGINT unix seconds, BIGINT 0/1 booleans).

-- What a security policy asks of passwords and recovery (see SecurityPolicy in src/policy/model.rs).
ALTER TABLE security_policies ADD COLUMN password_history BIGINT NOT NULL DEFAULT 0;
ALTER TABLE security_policies ADD COLUMN password_max_age_days BIGINT;
ALTER TABLE security_policies ADD COLUMN security_questions_required BIGINT NOT NULL DEFAULT 0;

-- When the password was last set, for the policy's maximum age; existing users count from their last
-- change. must_change (0/1) makes the next sign-in set a new password first.
ALTER TABLE users ADD COLUMN password_changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN password_must_change BIGINT NOT NULL DEFAULT 0;
UPDATE users SET password_changed_at = updated_at;
-- Sessions that began before this time (unix milliseconds) get no further assertion: set when an
-- administrator resets the password or the second factors, so it holds whichever session store is used.
ALTER TABLE users ADD COLUMN sessions_not_before BIGINT NOT NULL DEFAULT 0;

-- Earlier password hashes (argon2id PHC strings), newest first by seq; at most 24 kept per user.
CREATE TABLE password_history (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);

-- Answers to security questions, normalised then hashed with argon2id; question is a catalogue id.
CREATE TABLE security_answers (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    question TEXT NOT NULL,
    answer_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, question)
);

-- Single-use password reset links issued by an administrator. Only the SHA-256 of the token is kept;
-- used_at is set once, by a conditional UPDATE.
CREATE TABLE password_reset_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE INDEX password_reset_tokens_by_user ON password_reset_tokens (user_id);
