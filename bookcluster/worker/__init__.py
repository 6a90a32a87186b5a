"""A region's worker process: its jobs, the outbox relay and the expiry sweeper."""
