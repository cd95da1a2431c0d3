"""Runnable example sagas; ``python -m examples`` runs the demo."""
