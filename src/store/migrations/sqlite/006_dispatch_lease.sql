-- The lease of a pending envelope handed to a worker of the fleet (src/fleet/dispatcher.ts): the
-- worker holding it (null: none acknowledged yet), its delivery number (0: never handed out) and
-- until when the lease runs unless renewed. Deleted with the pending row when it is consumed.
ALTER TABLE pending ADD COLUMN lease_worker TEXT;
ALTER TABLE pending ADD COLUMN lease_delivery INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pending ADD COLUMN lease_until INTEGER;
