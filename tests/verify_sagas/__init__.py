"""Saga modules for ``tests/test_cli_verify.py``: a sound one that passes every gate of
``sagaflow verify``, and one broken module per gate that fails that gate."""
