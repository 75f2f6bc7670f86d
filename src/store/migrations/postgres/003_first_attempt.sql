-- The attempt a pending envelope's retry budget counts from (see the SQLite migration 003).
ALTER TABLE pending ADD COLUMN first_attempt integer NOT NULL DEFAULT 1;
