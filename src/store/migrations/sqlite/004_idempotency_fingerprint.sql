-- A digest of the request that came with an idempotency key (an HTTP body): the same key with
-- another request is a conflict, not a repeat. Set once, when the trace is created.
ALTER TABLE traces ADD COLUMN idempotency_fingerprint TEXT;
