"""dfmvr.export."""
