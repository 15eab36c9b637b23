"""Tests of nanogpt.models."""
