"""Trainer and manager views of the ladder record: a self-contained static site, CSV and JSON."""
