"""Tests of nanogpt.training."""
