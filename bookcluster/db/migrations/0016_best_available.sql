-- Best-available seats (docs/architecture.md "Best available seats"): where each seat
-- sits in its row and which screen seats are best.
-- seat.position: the seat's place across its row, in seat widths from the row's left
-- end; a gap in positions is an aisle. NULL: the seat's number (no aisles).
-- seat.accessible: a wheelchair space or companion seat (`"accessible": true` asks
-- for these only).
-- screen.focal_row / focal_seat: the sweet spot that "best" is measured from (a row
-- label, and a position in that row, halves allowed); NULL: the row two thirds of the
-- way back from the screen, and the middle of that row.
-- screen.no_orphan_seats: a manual pick that would leave a single free seat between
-- taken seats or at a row's end is refused, answered with a warning, or not checked.
ALTER TABLE seat ADD COLUMN position integer CHECK (position > 0);
ALTER TABLE seat ADD COLUMN accessible boolean NOT NULL DEFAULT false;
ALTER TABLE screen ADD COLUMN focal_row text;
ALTER TABLE screen ADD COLUMN focal_seat numeric(6, 1) CHECK (focal_seat > 0);
ALTER TABLE screen ADD COLUMN no_orphan_seats text NOT NULL DEFAULT 'warn'
    CHECK (no_orphan_seats IN ('refuse', 'warn', 'off'));
