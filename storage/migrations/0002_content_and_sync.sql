-- The content index derived from Git (characters, locations) and the sync
-- bookkeeping: device operations for idempotency, conflicts, the change feed.

CREATE TABLE character (
    novel_id    TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT,
    word_count  INTEGER NOT NULL DEFAULT 0 CHECK (word_count >= 0),
    blob        TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (novel_id, id),
    UNIQUE (novel_id, path)
);
CREATE INDEX character_by_name ON character(novel_id, name);

CREATE TABLE location (
    novel_id    TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    type        TEXT,
    parent_id   TEXT,
    word_count  INTEGER NOT NULL DEFAULT 0 CHECK (word_count >= 0),
    blob        TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (novel_id, id),
    UNIQUE (novel_id, path)
);
CREATE INDEX location_by_name ON location(novel_id, name);

-- One row per (device, operation): a replay answers the stored response.
CREATE TABLE device_operation (
    novel_id      TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL,
    op_id         TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL CHECK (json_valid(response)),
    user_id       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (novel_id, device_id, op_id)
);

CREATE TABLE conflict (
    id                 TEXT PRIMARY KEY,
    novel_id           TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    path               TEXT NOT NULL,
    field              TEXT,
    -- NULL: the file (or field) is absent on that side, e.g. deleted by the device.
    base               TEXT,
    ours               TEXT,
    theirs             TEXT,
    device_id          TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    device_commit      TEXT NOT NULL,
    merge_commit       TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    resolved_at        TEXT,
    resolved_commit    TEXT,
    resolved_by        TEXT
);
CREATE INDEX conflict_open ON conflict(novel_id, created_at) WHERE resolved_at IS NULL;

-- Every head movement, in order; the feed cursor is `seq`.
CREATE TABLE novel_change (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    novel_id    TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    head        TEXT NOT NULL,
    changed_at  TEXT NOT NULL
);
CREATE INDEX novel_change_by_novel ON novel_change(novel_id, seq);
