"""Tests that run the examples end to end."""
