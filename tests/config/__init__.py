"""Tests of nanogpt.config."""
