-- forensics_runs_accepted (journal, accepted_at) tempted the planner, with stale statistics
-- during a bulk projection, into answering "the earlier run on this thread with this input"
-- by scanning every run accepted in the window (minutes of traffic per new run). The thread
-- index (journal, tenant, thread_id, input_hash, accepted_at) answers it by equality; scans
-- by time read forensics_runs rarely enough to do without an index of their own.
DROP INDEX IF EXISTS forensics_runs_accepted;
