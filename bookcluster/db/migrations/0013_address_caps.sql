-- Per-address caps on holds (README "Limits"): many accounts from one client address
-- must not hold a whole show. The home node records the address a hold came from (the
-- vouched one behind a forward) and bc_record_hold counts that address's active holds
-- in this region and its held seats in the show, under the address's advisory lock
-- (taken after the user's, in every hold: no lock-order cycle).
ALTER TABLE booking ADD COLUMN client_address text;
CREATE INDEX booking_active_by_address ON booking (client_address, show_id)
    WHERE status = 'INITIATED' AND client_address IS NOT NULL;
