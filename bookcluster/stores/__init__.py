"""Reaching a region's Redis and PostgreSQL: clients that follow Sentinel and Patroni,
the one owner of a process's connections, deadlines, and the one error table."""
