-- The archive of ended jobs. Payloads are msgspec's JSON kept as `json`, not `jsonb`: `json` keeps the text as
-- written (key order, numbers, \u0000 escapes), so a dataset read back is the very bytes Redis held; the columns
-- beside them are what lists and filters need.

CREATE TABLE archived_jobs (
    task_id text PRIMARY KEY,
    owner text NOT NULL DEFAULT '',
    client_id text NOT NULL,
    status text NOT NULL,
    query text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    record json NOT NULL
);
CREATE INDEX archived_jobs_created ON archived_jobs (created_at DESC);
CREATE INDEX archived_jobs_owner ON archived_jobs (owner, created_at DESC);
CREATE INDEX archived_jobs_client ON archived_jobs (client_id, created_at DESC);

-- The dataset as extraction and assembly left it (rows, their citations, papers, stats); reviews apply on read.
CREATE TABLE archived_datasets (
    task_id text PRIMARY KEY REFERENCES archived_jobs ON DELETE CASCADE,
    dataset json NOT NULL
);

-- The documents the search kept (the `documents` output), in rank order.
CREATE TABLE archived_documents (
    task_id text NOT NULL REFERENCES archived_jobs ON DELETE CASCADE,
    position integer NOT NULL,
    document json NOT NULL,
    PRIMARY KEY (task_id, position)
);

-- The review trail, oldest first: entries are only ever appended, so a copy never rewrites one.
CREATE TABLE archived_reviews (
    task_id text NOT NULL REFERENCES archived_jobs ON DELETE CASCADE,
    position integer NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (task_id, position)
);

-- Jobs deleted by their owner: a copy queued before the delete must not bring one back.
CREATE TABLE deleted_jobs (
    task_id text PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
