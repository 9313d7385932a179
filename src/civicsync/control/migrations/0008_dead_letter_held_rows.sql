-- What a replay of an event-log flow's dead letter needs to restore every transition that failed or
-- waited: per transition its LSN and the flow's already-masked output values of the target key and
-- the event-log columns only (never more than the target tables themselves hold). Cleared once the
-- letter is replayed or discarded.
ALTER TABLE civicsync.dead_letters ADD COLUMN held jsonb;
