"""Operator commands: status, audit, failover, topology diff/apply/move, repair, and
a region's database set-up and seeding."""
