"""A region's worker process: its jobs (from the outbox), the expiry sweeper, the seat mirror."""
