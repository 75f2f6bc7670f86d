-- The lease of a pending envelope handed to a fleet worker (see the SQLite migration 006).
ALTER TABLE pending ADD COLUMN lease_worker text;
ALTER TABLE pending ADD COLUMN lease_delivery integer NOT NULL DEFAULT 0;
ALTER TABLE pending ADD COLUMN lease_until bigint;
