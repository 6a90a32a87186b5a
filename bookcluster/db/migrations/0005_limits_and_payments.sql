-- Abuse limits and payment before sale (the caps and the exact amount are checked by
-- bc_record_hold and bc_sell, bookcluster/db/functions/).
-- A booking remembers the payment intent created for it (`pay`), so asking to
-- pay twice returns the same intent instead of charging twice.

ALTER TABLE booking ADD COLUMN intent_id text;
