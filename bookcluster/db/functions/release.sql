-- Seats given back: released, expired, cancelled (bookcluster/booking/ledger.py).
-- EXPIRED is written only by bc_expire, CANCELLED only by bc_cancel.

-- Frees the seats still held (LOCKED) by these bookings, with their mirror rows (the
-- Redis seat mirror learns the release from them). Locks the seat rows in (show, seat)
-- order. Returns the freed seats.
CREATE OR REPLACE FUNCTION bc_release(p_bookings text[])
RETURNS TABLE (booking_id text, show_id bigint, seat_id text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT ss.hold_booking_id, ss.show_id, ss.seat_id FROM show_seat ss
        WHERE ss.hold_booking_id = ANY (p_bookings) AND ss.status = 'LOCKED'
        ORDER BY ss.show_id, ss.seat_id FOR UPDATE;
    INSERT INTO mirror_change (show_id, booking_id, op, seat_id)
    SELECT ss.show_id, ss.hold_booking_id, 'release', ss.seat_id FROM show_seat ss
    WHERE ss.hold_booking_id = ANY (p_bookings) AND ss.status = 'LOCKED'
    ORDER BY ss.show_id, ss.seat_id;
    UPDATE show_seat ss SET status = 'AVAILABLE', hold_booking_id = NULL,
           hold_expires_at = NULL, updated_at = now()
    WHERE ss.hold_booking_id = ANY (p_bookings) AND ss.status = 'LOCKED';
END $$;

-- INITIATED -> EXPIRED: holds that lapsed or were abandoned (the sweeper, which has
-- locked their rows) and a late payment whose seats are gone (the payment saga).
-- Frees what they still hold; returns the freed seats.
CREATE OR REPLACE FUNCTION bc_expire(p_bookings text[])
RETURNS TABLE (booking_id text, show_id bigint, seat_id text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    UPDATE booking b SET status = 'EXPIRED', updated_at = now()
    WHERE b.id = ANY (p_bookings) AND b.status = 'INITIATED';
    RETURN QUERY SELECT r.booking_id, r.show_id, r.seat_id FROM bc_release(p_bookings) r;
END $$;

-- INITIATED -> CANCELLED: its user cancels it (p_user, its owner; cancelling twice is
-- no error) or its payment failed (p_user NULL). Locks the booking row, frees its seats.
-- Returns the status it had (NULL: no such booking of p_user), its show and the seats
-- freed; a booking neither INITIATED nor CANCELLED is left as it is.
CREATE OR REPLACE FUNCTION bc_cancel(p_booking text, p_user text)
RETURNS TABLE (prior text, show_id bigint, freed text[]) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    SELECT b.status, b.show_id INTO prior, show_id FROM booking b
    WHERE b.id = p_booking AND (p_user IS NULL OR b.user_id = p_user) FOR UPDATE;
    freed := '{}';
    IF prior IN ('INITIATED', 'CANCELLED') THEN
        freed := ARRAY(SELECT r.seat_id FROM bc_release(ARRAY[p_booking]) r);
        UPDATE booking b SET status = 'CANCELLED', updated_at = now() WHERE b.id = p_booking;
    END IF;
    RETURN NEXT;
END $$;
