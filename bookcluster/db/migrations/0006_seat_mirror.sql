-- The Redis seat mirror's change log (bookcluster/seats/mirror.py).
--
-- Every committed seat change that Redis must learn (a sale, a release) writes
-- its rows here in the same transaction. The node applies them at once after
-- commit; the region's worker applies every row not yet marked applied, in
-- order, until Redis answers, then marks it. Applying twice changes nothing.
-- Generations: each (re)start of a region's master gets the next number, kept
-- here so it never repeats (a master's own counter can go back after a crash).

CREATE TABLE mirror_change (
    id          bigserial PRIMARY KEY,
    show_id     bigint NOT NULL,
    booking_id  text NOT NULL,
    op          text NOT NULL CHECK (op IN ('book', 'release')),
    seat_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz
);
CREATE INDEX mirror_change_pending ON mirror_change (id) WHERE applied_at IS NULL;
CREATE INDEX mirror_change_applied ON mirror_change (applied_at) WHERE applied_at IS NOT NULL;

CREATE SEQUENCE mirror_generation_seq;

-- The reconciler looks at shows whose bookings changed lately.
CREATE INDEX booking_by_update ON booking (updated_at);
