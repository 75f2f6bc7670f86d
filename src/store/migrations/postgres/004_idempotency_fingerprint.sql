-- A digest of the request that came with an idempotency key (see the SQLite migration 004).
ALTER TABLE traces ADD COLUMN idempotency_fingerprint text;
