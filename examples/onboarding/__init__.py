"""Seed 002: client onboarding (workspace, billing, welcome email) started by an event."""
