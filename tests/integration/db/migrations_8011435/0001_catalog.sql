-- The catalog: every region holds all of it, so any node reads it locally.
CREATE TABLE city (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    state       text NOT NULL
);

CREATE TABLE theatre (
    id          text PRIMARY KEY,
    city_id     text NOT NULL REFERENCES city (id),
    name        text NOT NULL,
    address     text NOT NULL
);

CREATE TABLE screen (
    id          text PRIMARY KEY,
    theatre_id  text NOT NULL REFERENCES theatre (id),
    name        text NOT NULL
);

CREATE TABLE seat (
    screen_id   text NOT NULL REFERENCES screen (id),
    seat_id     text NOT NULL,
    row_label   text NOT NULL,
    number      integer NOT NULL CHECK (number > 0),
    category    text NOT NULL,
    price_paise integer NOT NULL CHECK (price_paise >= 0),
    -- Broken or blocked seats: never sold, in any show of this screen.
    blocked     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (screen_id, seat_id)
);

CREATE TABLE movie (
    id           text PRIMARY KEY,
    title        text NOT NULL,
    language     text NOT NULL,
    duration_min integer NOT NULL CHECK (duration_min > 0),
    certificate  text NOT NULL
);

CREATE TABLE show (
    id          bigint PRIMARY KEY,
    screen_id   text NOT NULL REFERENCES screen (id),
    movie_id    text NOT NULL REFERENCES movie (id),
    starts_at   timestamptz NOT NULL
);
CREATE INDEX show_by_screen ON show (screen_id, starts_at);
