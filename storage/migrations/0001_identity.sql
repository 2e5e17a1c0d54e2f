-- Accounts, sessions, tokens, organizations, teams, the novel registry, chapters
-- and AI-provider connections. Times are RFC 3339 UTC text; ids are opaque text.

CREATE TABLE user (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email       TEXT NOT NULL COLLATE NOCASE UNIQUE CHECK (length(email) BETWEEN 3 AND 320),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE account (
    user_id        TEXT PRIMARY KEY REFERENCES user(id) ON DELETE CASCADE,
    password_hash  TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE organization (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE CHECK (slug GLOB '[a-z0-9]*' AND length(slug) BETWEEN 2 AND 64),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    personal    INTEGER NOT NULL DEFAULT 0 CHECK (personal IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE member (
    organization_id  TEXT NOT NULL REFERENCES organization(id) ON DELETE CASCADE,
    user_id          TEXT NOT NULL REFERENCES user(id) ON DELETE CASCADE,
    role             TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at       TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX member_by_user ON member(user_id);

CREATE TABLE team (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organization(id) ON DELETE CASCADE,
    name             TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at       TEXT NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE TABLE team_member (
    team_id     TEXT NOT NULL REFERENCES team(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES user(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_member_by_user ON team_member(user_id);

CREATE TABLE session (
    id                      TEXT PRIMARY KEY,
    user_id                 TEXT NOT NULL REFERENCES user(id) ON DELETE CASCADE,
    token_hash              TEXT NOT NULL UNIQUE,
    user_agent              TEXT,
    active_organization_id  TEXT REFERENCES organization(id) ON DELETE SET NULL,
    active_team_id          TEXT REFERENCES team(id) ON DELETE SET NULL,
    created_at              TEXT NOT NULL,
    last_used_at            TEXT NOT NULL,
    expires_at              TEXT NOT NULL
);
CREATE INDEX session_by_user ON session(user_id, created_at);

CREATE TABLE personal_access_token (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES user(id) ON DELETE CASCADE,
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash    TEXT NOT NULL UNIQUE,
    token_prefix  TEXT NOT NULL,
    scopes        TEXT NOT NULL CHECK (scopes IN ('read', 'read write')),
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    expires_at    TEXT NOT NULL
);
CREATE INDEX personal_access_token_by_user ON personal_access_token(user_id, created_at);

-- Failed logins per address, shared by every server process on the data directory.
CREATE TABLE login_failure (
    email         TEXT PRIMARY KEY COLLATE NOCASE,
    failures      INTEGER NOT NULL CHECK (failures >= 0),
    window_start  TEXT NOT NULL,
    locked_until  TEXT
);

CREATE TABLE novel (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL REFERENCES organization(id) ON DELETE CASCADE,
    owner_id            TEXT NOT NULL REFERENCES user(id) ON DELETE RESTRICT,
    title               TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    description         TEXT,
    genre               TEXT,
    status              TEXT NOT NULL DEFAULT 'draft'
                        CHECK (status IN ('draft', 'in_progress', 'completed', 'published', 'archived')),
    visibility          TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    target_word_count   INTEGER CHECK (target_word_count IS NULL OR target_word_count >= 0),
    current_word_count  INTEGER NOT NULL DEFAULT 0 CHECK (current_word_count >= 0),
    head                TEXT,
    last_written_at     TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX novel_by_organization ON novel(organization_id, id);
CREATE INDEX novel_by_owner ON novel(owner_id);
CREATE INDEX novel_public ON novel(visibility, id) WHERE visibility = 'public';

-- Chapter rows are an index of chapters/*.md in the novel's Git repository; `id` comes
-- from the file's front matter, so it is unique within its novel only.
CREATE TABLE chapter (
    novel_id    TEXT NOT NULL REFERENCES novel(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    path        TEXT NOT NULL,
    title       TEXT NOT NULL,
    number      INTEGER NOT NULL CHECK (number >= 0),
    status      TEXT NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'in_progress', 'completed', 'published')),
    word_count  INTEGER NOT NULL DEFAULT 0 CHECK (word_count >= 0),
    blob        TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (novel_id, id),
    UNIQUE (novel_id, path)
);
CREATE INDEX chapter_by_number ON chapter(novel_id, number);

CREATE TABLE ai_provider (
    id                             TEXT PRIMARY KEY,
    user_id                        TEXT NOT NULL REFERENCES user(id) ON DELETE CASCADE,
    provider                       TEXT NOT NULL CHECK (provider IN
                                   ('openrouter', 'openai', 'anthropic', 'ollama', 'groq', 'gemini', 'cohere')),
    key_label                      TEXT,
    api_key_encrypted              TEXT,
    key_hash                       TEXT,
    key_hint                       TEXT,
    oauth_access_token_encrypted   TEXT,
    oauth_refresh_token_encrypted  TEXT,
    oauth_expires_at               TEXT,
    is_default                     INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    usage_limit                    INTEGER CHECK (usage_limit IS NULL OR usage_limit >= 0),
    current_usage                  INTEGER NOT NULL DEFAULT 0 CHECK (current_usage >= 0),
    reserved_usage                 INTEGER NOT NULL DEFAULT 0 CHECK (reserved_usage >= 0),
    supported_models               TEXT NOT NULL DEFAULT '[]'
                                   CHECK (json_valid(supported_models) AND json_type(supported_models) = 'array'),
    provider_config                TEXT NOT NULL DEFAULT '{}'
                                   CHECK (json_valid(provider_config) AND json_type(provider_config) = 'object'),
    last_used_at                   TEXT,
    created_at                     TEXT NOT NULL,
    updated_at                     TEXT NOT NULL
);
CREATE INDEX ai_provider_by_user ON ai_provider(user_id, created_at);
CREATE UNIQUE INDEX ai_provider_one_default ON ai_provider(user_id) WHERE is_default = 1;
CREATE UNIQUE INDEX ai_provider_same_key ON ai_provider(user_id, provider, key_hash)
    WHERE key_hash IS NOT NULL;

-- Facts about this server: the secret-key verifier and the like.
CREATE TABLE server_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
