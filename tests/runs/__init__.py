"""Tests of nanogpt.runs."""
