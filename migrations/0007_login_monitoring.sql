-- Login monitoring (issue #7): every sign-in attempt and every SSO, enriched with where and from what
-- device, plus the anomaly flags and the security-policy switch that reacts to them. Same dialect
-- conventions as 0001/0004 (BIGINT 0/1 booleans, `at` in unix milliseconds). One column per ALTER:
-- SQLite accepts no other form.

-- 'sign_in' (the login form, a second factor) or 'sso' (an assertion asked for by an SP).
ALTER TABLE login_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'sign_in';
-- The IP rule or policy that refused, when one did (the `reason` says it in words).
ALTER TABLE login_events ADD COLUMN rule TEXT;
-- The client address as 32 hex digits (IPv4 as ::ffff:a.b.c.d), so an address range is a BETWEEN.
ALTER TABLE login_events ADD COLUMN ip_hex TEXT;
-- ISO 3166 country code from the GeoIP database, or 'private' / 'loopback'; NULL when unknown.
ALTER TABLE login_events ADD COLUMN country TEXT;
ALTER TABLE login_events ADD COLUMN city TEXT;
-- Parsed from the User-Agent: browser family, operating system, device class.
ALTER TABLE login_events ADD COLUMN browser TEXT;
ALTER TABLE login_events ADD COLUMN os TEXT;
ALTER TABLE login_events ADD COLUMN device TEXT;
ALTER TABLE login_events ADD COLUMN user_agent TEXT;
-- A successful sign-in from a country / a device (browser + OS) never seen on an earlier success.
ALTER TABLE login_events ADD COLUMN new_country BIGINT NOT NULL DEFAULT 0;
ALTER TABLE login_events ADD COLUMN new_device BIGINT NOT NULL DEFAULT 0;

-- The dashboard's filters and groupings (login_events_at, _username_at, _outcome_at exist since 0004).
-- (outcome, at, username, ip) answers "attempts over time by outcome" (counted per bucket and outcome
-- as index ranges), "top failing users" and "top denied addresses" without touching the table.
CREATE INDEX login_events_outcome_at_user_ip ON login_events (outcome, at, username, ip);
CREATE INDEX login_events_ip_hex_at ON login_events (ip_hex, at);
CREATE INDEX login_events_country_at ON login_events (country, at);
CREATE INDEX login_events_sp_at ON login_events (sp, at);
-- Anomaly detection: the user's earlier successes.
CREATE INDEX login_events_user_outcome ON login_events (user_id, outcome, kind);

-- Security policy: a second factor for a sign-in from a new country or device.
ALTER TABLE security_policies ADD COLUMN mfa_on_new_device_or_country BIGINT NOT NULL DEFAULT 0;
