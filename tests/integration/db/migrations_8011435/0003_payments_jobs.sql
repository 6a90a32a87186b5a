-- Payments from the gateway, their webhook events, tickets and notifications.

-- A booking can see more than one payment (a retry, a late duplicate); each
-- ends as the booking's payment or as a refund, never both.
ALTER TABLE payment DROP CONSTRAINT payment_booking_id_key;
ALTER TABLE payment DROP CONSTRAINT IF EXISTS payment_status_check;
ALTER TABLE payment ADD CONSTRAINT payment_status_check
    CHECK (status IN ('RECORDED', 'CAPTURED', 'FAILED', 'REFUND_PENDING', 'REFUNDED'));
ALTER TABLE payment ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX payment_by_booking ON payment (booking_id);

-- Webhook events by id: a repeat delivery is a no-op.
CREATE TABLE payment_event (
    event_id     text PRIMARY KEY,
    kind         text NOT NULL,
    payment_id   text NOT NULL,
    booking_id   text NOT NULL,
    amount_paise integer NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    outcome      text
);

CREATE TABLE ticket (
    booking_id  text PRIMARY KEY REFERENCES booking (id),
    reference   text NOT NULL,
    path        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification (
    id          text PRIMARY KEY,  -- <booking_id>:<kind>: one message per event
    booking_id  text NOT NULL,
    user_id     text NOT NULL,
    kind        text NOT NULL,
    path        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
