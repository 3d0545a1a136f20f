-- Networking (hearth-net). A VM row with `net_allow` set was created with
-- network.outbound = true; `net_allow` is the allowlist as the user gave it (JSON array of
-- strings; host names are re-resolved whenever rules are applied). `net_subnet` is the VM's
-- /29 from the address pool, kept across stop/start and set NULL once the VM is failed or
-- deleted and its host network is gone, so the block is reused.
ALTER TABLE vms ADD COLUMN net_allow TEXT;
ALTER TABLE vms ADD COLUMN net_subnet TEXT;
-- Never two VMs with one address, whatever the allocator or a crash did. Partial, so the
-- many NULLs of VMs without network do not count (same syntax on PostgreSQL).
CREATE UNIQUE INDEX vms_net_subnet ON vms (net_subnet) WHERE net_subnet IS NOT NULL;
