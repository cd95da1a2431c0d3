"""Seed 001: user registration with payment; refund and account deletion on rollback."""
