-- The attempt a pending envelope's retry budget counts from: its attempt when it was accepted
-- at its node (1, or the next attempt of a replayed dead letter). Resume needs it so that a
-- retry under way at a crash does not start the budget over.
ALTER TABLE pending ADD COLUMN first_attempt INTEGER NOT NULL DEFAULT 1;
