-- A VM's idle timeout (issue 12): paused after this many seconds without an API call;
-- NULL never. Kept per VM so a re-adopted VM keeps the timeout it was created with.
ALTER TABLE vms ADD COLUMN idle_timeout_s INTEGER;
