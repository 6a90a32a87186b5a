-- Payments that do not end in a sale: failed, and refunds (the payment saga,
-- bookcluster/worker/jobs/payments.py, through bookcluster/booking/ledger.py). A sale
-- for a captured payment is bc_sell (sale.sql).

-- A failed payment: recorded FAILED; an INITIATED booking is CANCELLED (bc_cancel),
-- its seats freed and its user told. Returns the status the booking had (NULL: no such
-- booking, nothing recorded), its show and the seats freed.
CREATE OR REPLACE FUNCTION bc_payment_failed(p_booking text, p_payment text,
                                             p_amount integer)
RETURNS TABLE (prior text, show_id bigint, freed text[]) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    SELECT b.status, b.show_id INTO prior, show_id FROM booking b
    WHERE b.id = p_booking FOR UPDATE;
    freed := '{}';
    IF NOT FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO payment (id, booking_id, amount_paise, status)
    VALUES (p_payment, p_booking, p_amount, 'FAILED') ON CONFLICT (id) DO NOTHING;
    IF prior = 'INITIATED' THEN
        SELECT c.freed INTO freed FROM bc_cancel(p_booking, NULL) c;
        INSERT INTO outbox (kind, payload) VALUES
            ('notification', jsonb_build_object('booking_id', p_booking,
                                                'event', 'payment_failed'));
    END IF;
    RETURN NEXT;
END $$;

-- A captured payment that goes back: a refund job, and for a booking we issued its
-- payment REFUND_PENDING (unless it paid another booking or is past CAPTURED) and its
-- user told. A booking id we never issued (of a known show) has no payment row (its
-- foreign key) and nobody to tell; the money goes back all the same. Returns whether
-- the booking is known.
CREATE OR REPLACE FUNCTION bc_refund_started(p_booking text, p_payment text,
                                             p_amount integer, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_known boolean := EXISTS (SELECT 1 FROM booking WHERE id = p_booking);
BEGIN
    IF v_known THEN
        INSERT INTO payment (id, booking_id, amount_paise, status)
        VALUES (p_payment, p_booking, p_amount, 'REFUND_PENDING') ON CONFLICT (id) DO UPDATE
        SET status = 'REFUND_PENDING', updated_at = now()
        WHERE payment.status = 'CAPTURED' AND payment.booking_id = EXCLUDED.booking_id;
    END IF;
    INSERT INTO outbox (kind, payload) VALUES
        ('refund', jsonb_build_object('payment_id', p_payment, 'booking_id', p_booking,
                                      'amount_paise', p_amount, 'reason', p_reason));
    IF v_known THEN
        INSERT INTO outbox (kind, payload) VALUES
            ('notification', jsonb_build_object('booking_id', p_booking, 'event', 'refunded',
                                                'payment_id', p_payment));
    END IF;
    RETURN v_known;
END $$;

-- The gateway refunded it: REFUND_PENDING -> REFUNDED. Returns whether it changed.
CREATE OR REPLACE FUNCTION bc_refunded(p_booking text, p_payment text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payment SET status = 'REFUNDED', updated_at = now()
    WHERE id = p_payment AND booking_id = p_booking AND status = 'REFUND_PENDING';
    RETURN FOUND;
END $$;
