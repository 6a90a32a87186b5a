"""The booking rules: holds, contention, confirm, payments, ids, limits and signing."""
