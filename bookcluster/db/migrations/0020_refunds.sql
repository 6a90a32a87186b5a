-- Refunds of confirmed bookings before entry (bookcluster/booking/refunds.py): the seats
-- of a refunded sale go back on sale, and the Redis seat mirror learns it from an
-- 'unbook' change (the UNBOOK script: drops the booking's sold seats).
ALTER TABLE mirror_change DROP CONSTRAINT IF EXISTS mirror_change_op_check;
ALTER TABLE mirror_change ADD CONSTRAINT mirror_change_op_check
    CHECK (op IN ('book', 'release', 'unbook'));
