"""Tests of nanogpt.data."""
