-- Bookings: a region's PostgreSQL holds only the bookings of its own theatres.

-- Fencing tokens come from PostgreSQL, not Redis: a Redis counter can go
-- backwards after a failover, a sequence on the primary cannot.
CREATE SEQUENCE fence_token_seq;

CREATE TABLE show_seat (
    show_id          bigint NOT NULL REFERENCES show (id),
    seat_id          text NOT NULL,
    status           text NOT NULL DEFAULT 'AVAILABLE'
                     CHECK (status IN ('AVAILABLE', 'LOCKED', 'BOOKED', 'UNAVAILABLE')),
    hold_booking_id  text,
    hold_expires_at  timestamptz,
    -- Token of the newest hold on this seat; a confirm must present it.
    fence_token      bigint,
    booked_booking_id text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (show_id, seat_id),
    CHECK ((status = 'LOCKED') = (hold_booking_id IS NOT NULL)),
    CHECK ((status = 'LOCKED') = (hold_expires_at IS NOT NULL)),
    CHECK ((status = 'BOOKED') = (booked_booking_id IS NOT NULL))
);
CREATE INDEX show_seat_by_hold ON show_seat (hold_booking_id) WHERE hold_booking_id IS NOT NULL;

CREATE TABLE booking (
    id             text PRIMARY KEY,
    user_id        text NOT NULL,
    show_id        bigint NOT NULL REFERENCES show (id),
    status         text NOT NULL
                   CHECK (status IN ('INITIATED', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    fence_token    bigint NOT NULL,
    amount_paise   integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    -- Extending a hold never goes past this (created_at + max_hold).
    hold_deadline  timestamptz NOT NULL,
    payment_id     text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX booking_by_user ON booking (user_id, created_at DESC);
CREATE INDEX booking_to_sweep ON booking (expires_at) WHERE status = 'INITIATED';

CREATE TABLE booking_seat (
    booking_id  text NOT NULL REFERENCES booking (id),
    show_id     bigint NOT NULL,
    seat_id     text NOT NULL,
    price_paise integer NOT NULL,
    sold        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (booking_id, seat_id)
);
-- The last line of defence: a seat of a show is sold at most once, whatever
-- Redis or the application believed.
CREATE UNIQUE INDEX booking_seat_sold_once ON booking_seat (show_id, seat_id) WHERE sold;

CREATE TABLE payment (
    id           text PRIMARY KEY,
    booking_id   text NOT NULL UNIQUE REFERENCES booking (id),
    amount_paise integer NOT NULL,
    status       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Jobs written in the same transaction as the change that causes them.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    relayed_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE relayed_at IS NULL;

-- Idempotency keys of confirm, scoped to the booking's user, kept >= 24 h.
CREATE TABLE idempotency (
    user_id       text NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status_code   integer NOT NULL,
    response_body text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
