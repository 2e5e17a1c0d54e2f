-- Each revision as the history API shows it (one `RevisionItem` of api.md, as JSON),
-- written once when the revision is recorded (storage/history.py, `revision_item`). A
-- revision never changes, so a page of history is read as stored text: no JSON is built
-- per request and no row of revision_path is read. The rows indexed before this
-- migration get theirs here, from the columns they already hold.
ALTER TABLE revision ADD COLUMN item TEXT;

UPDATE revision SET item = json_object(
    'rev', rev, 'parents', json(parents),
    'author', json_object('id', author_id, 'name', author_name),
    'device_id', device_id, 'message', message, 'time', time,
    'paths', json((SELECT json_group_array(p.path ORDER BY p.path) FROM revision_path p
                   WHERE p.novel_id = revision.novel_id AND p.seq = revision.seq)),
    'words_added', words_added, 'words_removed', words_removed,
    'changes', json((SELECT json_group_array(json_object(
                         'path', p.path, 'old_path', p.old_path, 'change', p.change,
                         'words_added', p.words_added, 'words_removed', p.words_removed
                     ) ORDER BY p.path) FROM revision_path p
                     WHERE p.novel_id = revision.novel_id AND p.seq = revision.seq)));
