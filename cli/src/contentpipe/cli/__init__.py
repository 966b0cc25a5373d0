"""The `contentpipe` command-line client (filled in by a later issue)."""
