"""A payout batch: one transfer per payee, fanned out over the batch's list."""
