-- A move is a journal that drives itself (cluster/moves.py). Whoever drives a move (the
-- operator's mover, else the source region's worker) names itself in `driver` and
-- renews `updated_at` while it lives; a journal not renewed for a few seconds is taken
-- over by the worker, and every step it records is a compare-and-set on `driver`, so a
-- driver that was paused and wakes up can record nothing more.
ALTER TABLE theatre_move ADD COLUMN driver text NOT NULL DEFAULT '';

-- Kept at a move's target: moves that were rolled back before they committed there.
-- The mover's target transaction takes the theatre's move lock, then refuses to commit
-- a move recorded here; a rollback records it under the same lock. So a paused mover
-- that wakes up after its move was rolled back can never make the target an owner.
CREATE TABLE move_abort (
    source      text NOT NULL,
    move_id     bigint NOT NULL,
    theatre_id  text NOT NULL,
    aborted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, move_id)
);
