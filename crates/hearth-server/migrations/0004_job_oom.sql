-- Whether the out-of-memory killer ended the job's run (the agent reads it from the
-- run's cgroup, memory.events oom_kill).
ALTER TABLE jobs ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0;
