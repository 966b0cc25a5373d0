"""Tests of the oauth service."""
