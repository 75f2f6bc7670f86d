-- Envelopes a transport accepted while its broker was away (see the SQLite migration 005).
CREATE TABLE outbox (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source     text   NOT NULL,
  topic      text   NOT NULL,
  envelope   jsonb  NOT NULL,
  created_at bigint NOT NULL
);
CREATE INDEX outbox_by_source ON outbox (source, seq);
