-- Check-in at the door (bookcluster/booking/checkin.py through ledger.py): one scan of
-- one ticket, decided and recorded under the booking's row lock, so two gates scanning
-- the same ticket at once queue up and exactly one admits it.

-- p_seats: the seats the signed ticket names (NULL for an HMAC reference, which names
-- none). p_offline: the gate already let the bearer in or out by the signature alone;
-- a second entry is then recorded as entered_twice instead of refused.
-- outcome: admitted | exited | entered_twice | already_admitted | not_inside |
-- no_reentry | not_confirmed | refunded | seats_mismatch | unknown_booking (nothing
-- recorded). replayed: the nonce was scanned before and this is that scan's answer.
-- prior_at/prior_gate: the admission a refusal or a double entry refers to.
CREATE OR REPLACE FUNCTION bc_checkin(p_show bigint, p_booking text, p_seats text[],
                                      p_nonce text, p_gate text, p_scanner text,
                                      p_direction text, p_at timestamptz, p_offline boolean)
RETURNS TABLE (outcome text, replayed boolean, seats text[], booking_status text,
               scanned_at timestamptz, gate text, prior_at timestamptz, prior_gate text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_status text;
    v_payment text;
    v_theatre text;
    v_seen checkin_scan%ROWTYPE;
    v_last checkin_scan%ROWTYPE;
    v_prior bigint;
    v_reentry boolean;
    v_out text;  -- the decision (v_out, so the sale functions' outcome test skips it)
BEGIN
    SELECT b.status, b.payment_id INTO v_status, v_payment FROM booking b
    WHERE b.id = p_booking AND b.show_id = p_show FOR UPDATE;
    IF NOT FOUND THEN
        v_out := 'unknown_booking';
        outcome := v_out;
        replayed := false;
        RETURN NEXT;
        RETURN;
    END IF;
    booking_status := v_status;
    seats := ARRAY(SELECT bs.seat_id FROM booking_seat bs
                   WHERE bs.booking_id = p_booking ORDER BY bs.seat_id);
    SELECT * INTO v_seen FROM checkin_scan c
    WHERE c.booking_id = p_booking AND c.nonce = p_nonce;
    IF FOUND THEN
        replayed := true;
        v_out := v_seen.outcome;
        scanned_at := v_seen.scanned_at;
        gate := v_seen.gate;
        v_prior := v_seen.prior_scan;
    ELSE
        replayed := false;
        SELECT * INTO v_last FROM checkin_scan c
        WHERE c.booking_id = p_booking AND c.outcome IN ('admitted', 'exited')
        ORDER BY c.id DESC LIMIT 1;
        -- A refunded sale (bc_refund: CANCELLED, its payment going back) says so.
        IF EXISTS (SELECT 1 FROM payment p WHERE p.id = v_payment
                   AND p.status IN ('REFUND_PENDING', 'REFUNDED')) THEN
            v_out := 'refunded';
        ELSIF v_status <> 'CONFIRMED' THEN
            v_out := 'not_confirmed';
        ELSIF p_seats IS NOT NULL AND NOT (p_seats @> seats AND seats @> p_seats) THEN
            v_out := 'seats_mismatch';
        ELSIF p_direction = 'in' AND v_last.outcome = 'admitted' THEN
            v_out := CASE WHEN p_offline THEN 'entered_twice' ELSE 'already_admitted' END;
            v_prior := v_last.id;
        ELSIF p_direction = 'in' AND v_last.outcome = 'exited' THEN
            SELECT ct.reentry INTO v_reentry FROM checkin_theatre ct
            JOIN screen sc ON sc.theatre_id = ct.theatre_id
            JOIN show s ON s.screen_id = sc.id WHERE s.id = p_show;
            v_out := CASE WHEN v_reentry IS DISTINCT FROM false OR p_offline
                            THEN 'admitted' ELSE 'no_reentry' END;
        ELSIF p_direction = 'in' THEN
            v_out := 'admitted';
        ELSIF v_last.outcome = 'admitted' THEN
            v_out := 'exited';
        ELSE
            v_out := 'not_inside';
        END IF;
        INSERT INTO checkin_scan (booking_id, show_id, nonce, gate, scanner, direction,
                                  scanned_at, offline, outcome, prior_scan)
        VALUES (p_booking, p_show, p_nonce, p_gate, p_scanner, p_direction, p_at,
                p_offline, v_out, v_prior);
        scanned_at := p_at;
        gate := p_gate;
    END IF;
    outcome := v_out;
    IF v_prior IS NOT NULL THEN
        SELECT c.scanned_at, c.gate INTO prior_at, prior_gate FROM checkin_scan c
        WHERE c.id = v_prior;
    END IF;
    RETURN NEXT;
END $$;

-- Head counts of shows: seats sold, seats admitted (tickets admitted at least once),
-- seats inside now (tickets whose newest admitting or exiting scan admitted them).
CREATE OR REPLACE FUNCTION bc_checkin_counts(p_shows bigint[])
RETURNS TABLE (show_id bigint, sold bigint, admitted bigint, inside bigint)
LANGUAGE sql STABLE AS $$
    WITH shows AS (SELECT unnest(p_shows) AS show_id),
    last AS (
        SELECT DISTINCT ON (c.booking_id) c.booking_id, c.show_id, c.outcome
        FROM checkin_scan c WHERE c.show_id = ANY (p_shows)
          AND c.outcome IN ('admitted', 'exited')
        ORDER BY c.booking_id, c.id DESC),
    ever AS (
        SELECT DISTINCT c.booking_id FROM checkin_scan c
        WHERE c.show_id = ANY (p_shows) AND c.outcome = 'admitted')
    SELECT s.show_id,
           (SELECT count(*) FROM booking_seat bs WHERE bs.show_id = s.show_id AND bs.sold),
           (SELECT count(*) FROM booking_seat bs JOIN ever e ON e.booking_id = bs.booking_id
            WHERE bs.show_id = s.show_id),
           (SELECT count(*) FROM booking_seat bs JOIN last l ON l.booking_id = bs.booking_id
            WHERE bs.show_id = s.show_id AND l.outcome = 'admitted')
    FROM shows s;
$$;

-- Head counts of this region's shows whose check-in window is open now (a show opens
-- p_opens_before its start and closes p_closes_after it) and that sold a seat here. A
-- theatre's sold seats live only at its home (a move forgets them at the source), so
-- every show is counted by one region: what the region's worker exports as metrics.
CREATE OR REPLACE FUNCTION bc_checkin_heads(p_opens_before interval, p_closes_after interval)
RETURNS TABLE (show_id bigint, sold bigint, admitted bigint, inside bigint)
LANGUAGE sql STABLE AS $$
    SELECT * FROM bc_checkin_counts(ARRAY(
        SELECT s.id FROM show s
        WHERE s.starts_at BETWEEN now() - p_closes_after AND now() + p_opens_before
          AND EXISTS (SELECT 1 FROM booking_seat bs WHERE bs.show_id = s.id AND bs.sold)
        ORDER BY s.id));
$$;
