-- Traces keyed by trace id first, and indexed only where a trace is unusual.
--
-- A trace row is written once per message on the fast path (a task accepted and finished within
-- one group commit), so every index on it is paid by every message. Now:
-- * the primary key (trace_id, flow) serves lookups by id alone (history), listing newest first
--   (trace ids are UUIDv7: they sort by creation time) and the per-flow lookups;
-- * running traces are indexed by flow for resume and ownership: a trace that starts and ends in
--   one commit never enters that index;
-- * traces that did not succeed are indexed by status for listing them;
-- * the lifecycle events trace_start, trace_success and trace_failed are no longer stored as
--   rows: the trace row holds what they say, and history derives them from it.
CREATE TABLE traces_v2 (
  flow            TEXT    NOT NULL,
  trace_id        TEXT    NOT NULL,
  tenant          TEXT    NOT NULL,
  status          TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  deadline        INTEGER,
  idempotency_key TEXT,
  result          TEXT,
  error           TEXT,
  owner           TEXT,
  PRIMARY KEY (trace_id, flow)
) WITHOUT ROWID;
INSERT INTO traces_v2 (flow, trace_id, tenant, status, created_at, updated_at, deadline, idempotency_key, result, error, owner)
  SELECT flow, trace_id, tenant, status, created_at, updated_at, deadline, idempotency_key, result, error, owner FROM traces;
DROP TABLE traces;
ALTER TABLE traces_v2 RENAME TO traces;
CREATE INDEX traces_running ON traces (flow, created_at, trace_id) WHERE status = 'running';
CREATE INDEX traces_unsuccessful ON traces (status, trace_id) WHERE status <> 'succeeded';
CREATE INDEX traces_by_key ON traces (flow, tenant, idempotency_key, created_at) WHERE idempotency_key IS NOT NULL;
DELETE FROM events WHERE type IN ('trace_start', 'trace_success', 'trace_failed');
