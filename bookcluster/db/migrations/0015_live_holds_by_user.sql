-- The caps of a hold (bc_record_hold) count a user's live holds, in the region and in
-- one show. With only booking_by_user (every booking the user ever made) and
-- booking_by_show (every booking of the show), the seats-per-show count was planned as
-- a BitmapAnd reading every booking index entry of the show, or as a scan of
-- booking_to_sweep (every live hold of the region; a generic plan made while few holds
-- were live keeps that choice as they grow). This index holds only live holds, by user
-- and show: the caps read only that user's (bc_record_hold keeps the expiry out of the
-- index conditions, so booking_to_sweep is never the cheaper guess).
CREATE INDEX booking_live_by_user ON booking (user_id, show_id) WHERE status = 'INITIATED';
