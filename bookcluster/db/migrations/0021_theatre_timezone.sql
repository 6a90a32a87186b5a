-- Each theatre's time zone (an IANA name): tickets and mails show a show's start in it
-- (bookcluster/booking/formats.py). Every theatre of today's catalog is in India. The
-- check refuses a name PostgreSQL's own zone database does not know (AT TIME ZONE
-- raises on it); the catalog's loader refuses it first, naming the theatre. The catalog
-- is copied to every region (seed, a new region's copy), so every region has the column.
ALTER TABLE theatre ADD COLUMN timezone text NOT NULL DEFAULT 'Asia/Kolkata'
    CHECK ((timestamptz '2000-01-01 00:00+00' AT TIME ZONE timezone) IS NOT NULL);
