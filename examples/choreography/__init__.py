"""The order saga of seeds 002/003 written both ways: orchestrated and choreographed."""
