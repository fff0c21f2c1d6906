"""Grading: the pipeline, the sandbox, trusted checks, nbgrader integration and the lab self-test."""
