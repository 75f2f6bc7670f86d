-- Checkpoint keys in byte order, as SQLite and JavaScript compare them: a range of the primary
-- key is then the keys that start with a prefix whatever the database's locale (listCheckpoints;
-- the 2389 adapter lists the notes of its unanswered tasks so).
ALTER TABLE checkpoints ALTER COLUMN key TYPE text COLLATE "C";
