"""Tests of nanogpt.perf."""
