-- Check-in at the door (bookcluster/booking/checkin.py): every scan of a ticket a home
-- region recorded, online or uploaded later by a gate that was offline, with what it
-- decided. Who is inside is the newest admitting or exiting scan of a booking. No
-- foreign key to booking: a theatre move forgets its bookings at the source.
CREATE TABLE checkin_scan (
    id           bigserial PRIMARY KEY,
    booking_id   text NOT NULL,
    show_id      bigint NOT NULL,
    nonce        text NOT NULL,           -- the gate's, one per scan: a retry replays
    gate         text NOT NULL,
    scanner      text NOT NULL,           -- the token's user
    direction    text NOT NULL CHECK (direction IN ('in', 'out')),
    scanned_at   timestamptz NOT NULL,    -- the gate's clock for an offline scan
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    offline      boolean NOT NULL DEFAULT false,
    -- admitted, exited, entered_twice (an offline gate let a ticket in that was
    -- inside: recorded, reported, never hidden); refusals: already_admitted,
    -- not_inside, no_reentry, not_confirmed, refunded
    outcome      text NOT NULL,
    prior_scan   bigint,                  -- the admission a refusal or a double refers to
    UNIQUE (booking_id, nonce)
);
CREATE INDEX checkin_scan_by_show ON checkin_scan (show_id);

-- Per theatre: whether a ticket that went out may come in again (no row: it may).
CREATE TABLE checkin_theatre (
    theatre_id  text PRIMARY KEY REFERENCES theatre (id),
    reentry     boolean NOT NULL DEFAULT true
);
