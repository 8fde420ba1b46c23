"""Tiny offline models for tests, examples and demos (nothing is downloaded)."""
