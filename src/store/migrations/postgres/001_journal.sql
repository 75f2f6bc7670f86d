-- Roost journal, PostgreSQL (13 or later). Times are epoch milliseconds; JSON values are jsonb.
-- Runs with search_path set to the store's schema.

CREATE TABLE traces (
  flow            text    NOT NULL,
  trace_id        text    NOT NULL,
  tenant          text    NOT NULL,
  status          text    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
  created_at      bigint  NOT NULL,
  updated_at      bigint  NOT NULL,
  deadline        bigint,
  idempotency_key text,
  result          jsonb,
  error           jsonb,
  owner           text,
  PRIMARY KEY (flow, trace_id)
);
CREATE INDEX traces_by_status ON traces (flow, status, created_at);
CREATE INDEX traces_by_time ON traces (created_at DESC, trace_id DESC);
CREATE INDEX traces_by_key ON traces (flow, tenant, idempotency_key, created_at) WHERE idempotency_key IS NOT NULL;

-- Envelopes accepted at a node and not consumed there yet: what a resume re-enqueues, by seq.
CREATE TABLE pending (
  seq         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  envelope_id text    NOT NULL UNIQUE,
  flow        text    NOT NULL,
  node        text    NOT NULL,
  trace_id    text    NOT NULL,
  hops        integer NOT NULL,
  envelope    jsonb   NOT NULL
);
CREATE INDEX pending_by_flow ON pending (flow, seq);
CREATE INDEX pending_by_trace ON pending (flow, trace_id);

CREATE TABLE outputs (
  seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  flow     text   NOT NULL,
  trace_id text   NOT NULL,
  value    jsonb  NOT NULL
);
CREATE INDEX outputs_by_trace ON outputs (flow, trace_id, seq);

CREATE TABLE events (
  seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  trace_id text   NOT NULL,
  type     text   NOT NULL,
  ts       bigint NOT NULL,
  event    jsonb  NOT NULL
);
CREATE INDEX events_by_trace ON events (trace_id, seq);

CREATE TABLE steps (
  step_key text   PRIMARY KEY,
  trace_id text   NOT NULL,
  value    jsonb  NOT NULL,
  ts       bigint NOT NULL
);
CREATE INDEX steps_by_trace ON steps (trace_id);

-- The latest checkpoint per (trace, node, input): overwritten, pruned with its trace.
CREATE TABLE checkpoints (
  key      text   PRIMARY KEY,
  trace_id text   NOT NULL,
  value    jsonb  NOT NULL,
  ts       bigint NOT NULL
);
CREATE INDEX checkpoints_by_trace ON checkpoints (trace_id);

CREATE TABLE dead_letters (
  id         text    PRIMARY KEY,
  flow       text    NOT NULL,
  node       text    NOT NULL,
  trace_id   text    NOT NULL,
  tenant     text    NOT NULL,
  envelope   jsonb   NOT NULL,
  error      jsonb   NOT NULL,
  attempts   integer NOT NULL,
  created_at bigint  NOT NULL
);
CREATE INDEX dead_letters_by_time ON dead_letters (created_at DESC);

CREATE TABLE leases (
  name   text   PRIMARY KEY,
  holder text   NOT NULL,
  token  bigint NOT NULL,
  until  bigint NOT NULL
);

CREATE TABLE kv (
  key     text   PRIMARY KEY,
  value   jsonb  NOT NULL,
  version bigint NOT NULL
);
