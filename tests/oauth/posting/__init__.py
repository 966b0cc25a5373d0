"""Tests of the posting half of the oauth service."""
