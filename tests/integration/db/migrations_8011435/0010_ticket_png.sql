-- The ticket's picture lives in its row, not in a file on the worker's disk: any node
-- on any host serves it, and a theatre move carries it along with the booking
-- (bc_export_theatre copies ticket rows whole). `path` stays for tickets made before.
ALTER TABLE ticket ADD COLUMN png bytea;
ALTER TABLE ticket ALTER COLUMN path DROP NOT NULL;
