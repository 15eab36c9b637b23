"""Tests of nanogpt.evaluation."""
