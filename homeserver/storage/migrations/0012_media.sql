-- The content repository's metadata; the bytes live under media_store_path.
--
-- local_media: what our users uploaded. An asynchronous upload (POST /create) makes a
-- row with uploaded_ts NULL and unused_expires_ts set; the PUT fills in the rest.
-- `authenticated`: uploaded while enable_authenticated_media was on, so the legacy
-- unauthenticated download endpoints do not serve it.
CREATE TABLE local_media (
    media_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT,
    unused_expires_ts BIGINT,
    content_type TEXT,
    upload_name TEXT,
    media_length BIGINT,
    sha256 TEXT,
    last_access_ts BIGINT,
    quarantined_by TEXT,
    safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE,
    authenticated BOOLEAN NOT NULL
);
CREATE INDEX local_media_by_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_by_access ON local_media (last_access_ts);
-- A new upload with the bytes of quarantined media is quarantined too.
CREATE INDEX local_media_by_sha256 ON local_media (sha256);

-- Other servers' media we fetched for our users. filesystem_id names the file (never
-- the remote media ID, which the remote chose).
CREATE TABLE remote_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    filesystem_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    upload_name TEXT,
    media_length BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT NOT NULL,
    quarantined_by TEXT,
    authenticated BOOLEAN NOT NULL,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_by_access ON remote_media (last_access_ts);

-- Thumbnails of local (origin '') and remote media.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    media_length BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method, content_type)
);
