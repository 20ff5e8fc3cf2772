-- Service provider registration and settings (issue #6): metadata fetched from a URL (with an optional
-- pinned signing certificate and a refresh schedule), the state of the last refresh, and the portal logo.
-- Same dialect conventions as 0001 (BIGINT unix seconds). One column per ALTER: SQLite accepts no other
-- form. Every column is nullable, so rows registered before this migration load unchanged.

-- The portal's logo for the SP: an https URL, or NULL for none.
ALTER TABLE service_providers ADD COLUMN logo_url TEXT;
-- Where the metadata comes from when it was registered from a URL (http or https); NULL for an upload or
-- a file in metadata/.
ALTER TABLE service_providers ADD COLUMN metadata_url TEXT;
-- PEM certificate that must have signed the fetched metadata (saml-metadata 3.1); NULL: not checked.
ALTER TABLE service_providers ADD COLUMN metadata_pinned_cert TEXT;
-- Seconds between scheduled refreshes of metadata_url; NULL: refreshed only on request.
ALTER TABLE service_providers ADD COLUMN metadata_refresh_secs BIGINT;
-- The last refresh attempt, the last successful one, and why the last attempt failed (NULL when it
-- succeeded). A failed refresh leaves metadata_xml as it was.
ALTER TABLE service_providers ADD COLUMN last_refresh_at BIGINT;
ALTER TABLE service_providers ADD COLUMN last_refresh_ok_at BIGINT;
ALTER TABLE service_providers ADD COLUMN last_refresh_error TEXT;
