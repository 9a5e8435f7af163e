"""dfmvr.train."""
