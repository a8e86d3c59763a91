"""Offline training: corpus to checkpoint bundles (`python -m training ...`)."""
