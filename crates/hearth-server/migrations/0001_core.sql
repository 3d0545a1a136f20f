-- Core tables of the manager. Portable SQL on purpose (PostgreSQL later): TEXT ids,
-- BIGINT millisecond timestamps, JSON kept as TEXT.
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kernel_path TEXT,
    rootfs_path TEXT,
    kernel_sha256 TEXT,
    rootfs_sha256 TEXT,
    -- api: uploaded through the API; built: found under images/; builtin: KERNEL_PATH env
    source TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE vms (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    image_id TEXT NOT NULL,
    image_name TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    vmm TEXT,
    accel TEXT,
    env TEXT NOT NULL,
    metadata TEXT NOT NULL,
    ttl_s BIGINT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    ready_at BIGINT,
    boot_ms BIGINT,
    error TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX vms_state ON vms (state);
CREATE INDEX vms_image ON vms (image_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Exec/run calls made on a VM, for GET /v1/vms/{id}/history.
CREATE TABLE vm_calls (
    id TEXT PRIMARY KEY,
    vm_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT NOT NULL,
    exit_code INTEGER,
    duration_ms BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX vm_calls_vm ON vm_calls (vm_id, created_at);
