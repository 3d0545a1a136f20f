-- Scripts and the job queue. Portable SQL like 0001 (TEXT ids, BIGINT ms timestamps,
-- JSON as TEXT, BLOB = BYTEA on PostgreSQL). The queue is the jobs table itself: a job
-- is claimed by flipping status 'queued' -> 'running' in one statement (see jobs/store.rs).
CREATE TABLE scripts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX scripts_created ON scripts (created_at, id);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    -- NULL for inline jobs (POST /v1/jobs), whose code is in `code`.
    script_id TEXT,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    code BLOB,
    -- RunParams as JSON: args, env, timeout_s, vcpus, memory_mib, files.
    params TEXT NOT NULL,
    -- queued | running | succeeded | failed | timed_out | cancelled | error
    status TEXT NOT NULL,
    exit_code INTEGER,
    error TEXT,
    script_error TEXT,
    result TEXT,
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    vm_id TEXT,
    vm_create_ms BIGINT,
    -- Worker that holds the job while it is running (host/pid/worker).
    claimed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    -- Set by POST /cancel on a running job; the worker also polls it (several hosts).
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    log_truncated INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_queue ON jobs (status, queued_at, id);
CREATE INDEX jobs_newest ON jobs (queued_at, id);
CREATE INDEX jobs_script ON jobs (script_id);
