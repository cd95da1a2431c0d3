"""Seed 002's order, booked at once: stock, payment and courier in one parallel group."""
