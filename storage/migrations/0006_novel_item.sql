-- Each novel as the API shows it (one `Novel` of api.md, as JSON), kept by SQLite itself:
-- the view says how the JSON is made, and triggers write it whenever a row it is made
-- from changes (a novel inserted or updated, its organization's slug). A listing reads
-- one stored text per novel instead of fifteen columns and a join, and sends it as it
-- is (storage/novels.py, `list_novels`; docs/benchmarks.md, "API throughput").
CREATE VIEW novel_json AS
SELECT n.id AS id, json_object(
    'id', n.id, 'title', n.title, 'description', n.description, 'genre', n.genre,
    'status', n.status, 'visibility', n.visibility,
    'target_word_count', n.target_word_count, 'current_word_count', n.current_word_count,
    'head', n.head, 'last_written_at', n.last_written_at, 'owner_id', n.owner_id,
    'organization_id', n.organization_id, 'organization_slug', o.slug,
    'created_at', n.created_at, 'updated_at', n.updated_at
) AS item
FROM novel n JOIN organization o ON o.id = n.organization_id;

ALTER TABLE novel ADD COLUMN item TEXT NOT NULL DEFAULT '{}';

UPDATE novel SET item = (SELECT j.item FROM novel_json j WHERE j.id = novel.id);

CREATE TRIGGER novel_item_after_insert AFTER INSERT ON novel BEGIN
    UPDATE novel SET item = (SELECT j.item FROM novel_json j WHERE j.id = NEW.id)
    WHERE id = NEW.id;
END;

-- Every column but `item` itself, so the trigger's own update does not fire it again.
CREATE TRIGGER novel_item_after_update AFTER UPDATE OF
    id, organization_id, owner_id, title, description, genre, status, visibility,
    target_word_count, current_word_count, head, last_written_at, created_at, updated_at
ON novel BEGIN
    UPDATE novel SET item = (SELECT j.item FROM novel_json j WHERE j.id = NEW.id)
    WHERE id = NEW.id;
END;

CREATE TRIGGER novel_item_after_organization_slug AFTER UPDATE OF slug ON organization BEGIN
    UPDATE novel SET item = (SELECT j.item FROM novel_json j WHERE j.id = novel.id)
    WHERE organization_id = NEW.id;
END;
