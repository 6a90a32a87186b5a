-- Holds take an optional Idempotency-Key: a user's key names one booking in
-- the region (the unique index), and bc_record_hold answers `replayed` instead
-- of recording a second hold when the key already has one. The key is checked
-- under the user's advisory lock, so two attempts racing each other record one.

ALTER TABLE booking ADD COLUMN hold_key text;
CREATE UNIQUE INDEX booking_hold_key ON booking (user_id, hold_key) WHERE hold_key IS NOT NULL;
