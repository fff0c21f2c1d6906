"""Environments: images, bring-up, readiness, transports, the reaper."""
