-- Envelopes a transport accepted while its broker was away: kept until sent, in seq order per
-- source (one transport of one process). Not part of any trace: prune leaves them alone.
CREATE TABLE outbox (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  source     TEXT    NOT NULL,
  topic      TEXT    NOT NULL,
  envelope   TEXT    NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX outbox_by_source ON outbox (source, seq);
