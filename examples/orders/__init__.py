"""Seed 003: an order saga (reserve, pay, confirm) with async participants."""
