-- Roost journal, SQLite. Times are epoch milliseconds; JSON values are stored as text.

CREATE TABLE traces (
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
  PRIMARY KEY (flow, trace_id)
) WITHOUT ROWID;
CREATE INDEX traces_by_status ON traces (flow, status, created_at);
CREATE INDEX traces_by_time ON traces (created_at DESC, trace_id DESC);
-- Partial: only traces emitted with a caller's key pay for it.
CREATE INDEX traces_by_key ON traces (flow, tenant, idempotency_key, created_at) WHERE idempotency_key IS NOT NULL;
-- Few indexes on purpose: every trace write updates each of them (listing by tenant and
-- pruning scan the time index instead).

-- Envelopes accepted at a node and not consumed there yet: what a resume re-enqueues, by seq.
CREATE TABLE pending (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  envelope_id TEXT    NOT NULL UNIQUE,
  flow        TEXT    NOT NULL,
  node        TEXT    NOT NULL,
  trace_id    TEXT    NOT NULL,
  hops        INTEGER NOT NULL,
  envelope    TEXT    NOT NULL
);
CREATE INDEX pending_by_flow ON pending (flow, seq);
CREATE INDEX pending_by_trace ON pending (flow, trace_id);

-- Outputs of running traces (egress values), until the trace's result is written.
CREATE TABLE outputs (
  seq      INTEGER PRIMARY KEY AUTOINCREMENT,
  flow     TEXT    NOT NULL,
  trace_id TEXT    NOT NULL,
  value    TEXT    NOT NULL
);
CREATE INDEX outputs_by_trace ON outputs (flow, trace_id, seq);

CREATE TABLE events (
  seq      INTEGER PRIMARY KEY AUTOINCREMENT,
  trace_id TEXT    NOT NULL,
  type     TEXT    NOT NULL,
  ts       INTEGER NOT NULL,
  event    TEXT    NOT NULL
);
CREATE INDEX events_by_trace ON events (trace_id, seq);

CREATE TABLE steps (
  step_key TEXT    PRIMARY KEY,
  trace_id TEXT    NOT NULL,
  value    TEXT    NOT NULL,
  ts       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX steps_by_trace ON steps (trace_id);

-- The latest checkpoint per (trace, node, input): overwritten, pruned with its trace.
CREATE TABLE checkpoints (
  key      TEXT    PRIMARY KEY,
  trace_id TEXT    NOT NULL,
  value    TEXT    NOT NULL,
  ts       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX checkpoints_by_trace ON checkpoints (trace_id);

CREATE TABLE dead_letters (
  id         TEXT    PRIMARY KEY,
  flow       TEXT    NOT NULL,
  node       TEXT    NOT NULL,
  trace_id   TEXT    NOT NULL,
  tenant     TEXT    NOT NULL,
  envelope   TEXT    NOT NULL,
  error      TEXT    NOT NULL,
  attempts   INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dead_letters_by_time ON dead_letters (created_at DESC);

CREATE TABLE leases (
  name   TEXT    PRIMARY KEY,
  holder TEXT    NOT NULL,
  token  INTEGER NOT NULL,
  until  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE kv (
  key     TEXT    PRIMARY KEY,
  value   TEXT    NOT NULL,
  version INTEGER NOT NULL
) WITHOUT ROWID;
