-- The revision index: every commit in a novel's history, in the order the server
-- recorded it (`seq`: parents before children, new commits above old ones), with the
-- files each touched and the words added and removed. Derived from Git; rebuilt by
-- `openwrite admin reindex` and at start-up for novels whose head it lacks.

CREATE TABLE revision (
    seq            INTEGER PRIMARY KEY,
    novel_id       TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    rev            TEXT NOT NULL,
    parents        TEXT NOT NULL CHECK (json_valid(parents)),
    author_id      TEXT,
    author_name    TEXT NOT NULL,
    author_email   TEXT NOT NULL,
    device_id      TEXT,
    message        TEXT NOT NULL,
    time           TEXT NOT NULL,
    -- 1 on the head's first-parent line; 0 for a device's commit merged beside it.
    mainline       INTEGER NOT NULL CHECK (mainline IN (0, 1)),
    words_added    INTEGER NOT NULL CHECK (words_added >= 0),
    words_removed  INTEGER NOT NULL CHECK (words_removed >= 0),
    -- Words of the novel's chapters after this commit; mainline revisions only.
    total_words    INTEGER CHECK (total_words >= 0),
    UNIQUE (novel_id, rev)
);
CREATE INDEX revision_by_novel ON revision(novel_id, seq);
CREATE INDEX revision_mainline ON revision(novel_id, mainline, seq);

CREATE TABLE revision_path (
    novel_id       TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    -- The revision's seq. No foreign key: deleting a novel cascades through novel_id,
    -- and a per-seq key would make that cascade scan this table once per revision.
    seq            INTEGER NOT NULL,
    path           TEXT NOT NULL,
    -- The file's name before this revision when it was renamed.
    old_path       TEXT,
    change         TEXT NOT NULL CHECK (change IN ('added', 'modified', 'deleted', 'renamed')),
    words_added    INTEGER NOT NULL CHECK (words_added >= 0),
    words_removed  INTEGER NOT NULL CHECK (words_removed >= 0),
    words_before   INTEGER NOT NULL CHECK (words_before >= 0),
    words_after    INTEGER NOT NULL CHECK (words_after >= 0),
    PRIMARY KEY (novel_id, path, seq)
) WITHOUT ROWID;
CREATE INDEX revision_path_by_seq ON revision_path(novel_id, seq);
-- A file's history also holds the revision that renamed it away.
CREATE INDEX revision_path_renamed ON revision_path(novel_id, old_path, seq)
    WHERE old_path IS NOT NULL;
