"""Seed 004: a money transfer (debit, credit) emitting AccountEvent domain events."""
