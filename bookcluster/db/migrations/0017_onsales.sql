-- On-sales: a waiting room in front of the holds of one or more shows of one home
-- region (bookcluster/booking/onsales.py). Stored in that region's PostgreSQL, which
-- decides the queue's order (onsale_join.seq), its seed, the admission frontier
-- (onsale_admit records every step, so an audit can check admission followed the
-- order) and which hold used a user's admission pass (onsale_pass_use).
CREATE TABLE onsale (
    id text PRIMARY KEY,
    show_ids bigint[] NOT NULL,
    opens_at timestamptz NOT NULL,
    sale_at timestamptz NOT NULL,
    window_s integer NOT NULL CHECK (window_s > 0),
    max_party integer NOT NULL CHECK (max_party > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    next_seq bigint NOT NULL DEFAULT 0,        -- the next join's sequence number
    seed bigint,                               -- drawn once, at sale_at (bc_onsale_seal)
    n_early bigint,                            -- joins before the seal: places [0, n_early) are shuffled
    sealed_at timestamptz,
    frontier bigint NOT NULL DEFAULT 0,        -- places [0, frontier) are admitted
    sold_out boolean NOT NULL DEFAULT false,
    CHECK (opens_at <= sale_at)
);

-- A show is under at most one on-sale.
CREATE TABLE onsale_show (
    show_id bigint PRIMARY KEY,
    onsale_id text NOT NULL REFERENCES onsale (id)
);

-- One place per user: seq in join order (0, 1, ...), early if joined before the seal.
CREATE TABLE onsale_join (
    onsale_id text NOT NULL REFERENCES onsale (id),
    seq bigint NOT NULL,
    user_id text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (onsale_id, seq),
    UNIQUE (onsale_id, user_id)
);

-- Every advance of the frontier: places below `frontier` were admitted at `at`.
CREATE TABLE onsale_admit (
    onsale_id text NOT NULL REFERENCES onsale (id),
    frontier bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (onsale_id, frontier)
);

-- The hold a user's admission pass was used for (single use per hold).
CREATE TABLE onsale_pass_use (
    onsale_id text NOT NULL REFERENCES onsale (id),
    user_id text NOT NULL,
    booking_id text NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (onsale_id, user_id)
);
