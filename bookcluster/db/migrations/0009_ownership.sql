-- Theatre ownership as data, fenced by the topology epoch (bookcluster/stores/ownership.py).
--
-- Each region records the theatres it owns and since which epoch (OWNED), the
-- one it is moving out (FROZEN: writes refused as `theatre_moving` until the move
-- commits or aborts), and those it gave away (MOVED: `owner` took it at `epoch`),
-- so a node with a stale map is told where the theatre went. Every write runs
-- `bc_own` first, in its own transaction: it takes the theatre's shared advisory
-- lock and then (a fresh snapshot: plpgsql takes one per statement) reads the
-- row. A move's freeze takes the same lock exclusively, so it waits for every
-- write in flight and every later write sees FROZEN.

CREATE TABLE theatre_owner (
    theatre_id  text PRIMARY KEY REFERENCES theatre (id),
    state       text NOT NULL CHECK (state IN ('OWNED', 'FROZEN', 'MOVED')),
    epoch       integer NOT NULL,      -- OWNED/FROZEN: owned since; MOVED: moved at
    owner       text,                  -- FROZEN: the move's target; MOVED: the new owner
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'OWNED') = (owner IS NULL))
);

-- The topology as applied (`bookcluster topology apply` / `move` write the same
-- rows to every region): a node whose file is older adopts the newest from here.
CREATE TABLE cluster_topology (
    epoch       integer PRIMARY KEY,
    document    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Moves out of this region, newest last: what a crashed mover resumes or rolls back,
-- and what the operator page lists. At most one unfinished move per theatre.
CREATE TABLE theatre_move (
    id          bigserial PRIMARY KEY,
    theatre_id  text NOT NULL,
    source      text NOT NULL,
    target      text NOT NULL,
    from_epoch  integer NOT NULL,
    to_epoch    integer NOT NULL,
    step        text NOT NULL CHECK (step IN ('frozen', 'committed', 'flipped', 'done',
                                              'aborted')),
    detail      jsonb NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX theatre_move_unfinished ON theatre_move (theatre_id)
    WHERE step NOT IN ('done', 'aborted');

-- Idempotency keys say whose booking they answered, so a move takes them along.
ALTER TABLE idempotency ADD COLUMN booking_id text;
CREATE INDEX idempotency_by_booking ON idempotency (booking_id);
-- A move reads (and its source then deletes) one theatre's rows by its shows: without
-- these, each of those statements scanned a whole table while the theatre was frozen.
CREATE INDEX booking_by_show ON booking (show_id);
CREATE INDEX booking_seat_by_show ON booking_seat (show_id);
CREATE INDEX notification_by_booking ON notification (booking_id);
CREATE INDEX payment_event_by_show ON payment_event
    ((substring(booking_id from '^b([0-9]+)-')::bigint));
CREATE INDEX mirror_change_by_show ON mirror_change (show_id);
