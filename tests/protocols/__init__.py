"""Tests for goim.protocols."""
