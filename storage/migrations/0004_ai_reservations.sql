-- One row per completion in flight: the tokens it reserved and until when. A server
-- killed mid-call leaves its row behind; once expired it is released (the tokens leave
-- ai_provider.reserved_usage) by the next reservation on that connection, so a crash
-- never holds a writer's limit hostage. ai_provider.reserved_usage = sum of the rows.

CREATE TABLE ai_usage_reservation (
    id           TEXT PRIMARY KEY,
    provider_id  TEXT NOT NULL REFERENCES ai_provider(id) ON DELETE CASCADE,
    tokens       INTEGER NOT NULL CHECK (tokens >= 0),
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX ai_usage_reservation_by_provider ON ai_usage_reservation(provider_id, expires_at);
