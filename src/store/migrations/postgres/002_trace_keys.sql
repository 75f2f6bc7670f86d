-- Traces keyed by trace id first, and indexed only where a trace is unusual (see the SQLite
-- migration of the same number for why): the primary key (trace_id, flow) serves lookups by id
-- and listing newest first; running traces and traces that did not succeed have partial
-- indexes; trace_start, trace_success and trace_failed are derived from the trace row.
ALTER TABLE traces DROP CONSTRAINT traces_pkey;
-- Byte order, as SQLite and JavaScript compare: ids sort by time whatever the database's locale.
ALTER TABLE traces ALTER COLUMN trace_id TYPE text COLLATE "C", ALTER COLUMN flow TYPE text COLLATE "C";
ALTER TABLE traces ADD PRIMARY KEY (trace_id, flow);
DROP INDEX traces_by_status;
DROP INDEX traces_by_time;
CREATE INDEX traces_running ON traces (flow, created_at, trace_id) WHERE status = 'running';
CREATE INDEX traces_unsuccessful ON traces (status, trace_id) WHERE status <> 'succeeded';
DELETE FROM events WHERE type IN ('trace_start', 'trace_success', 'trace_failed');
