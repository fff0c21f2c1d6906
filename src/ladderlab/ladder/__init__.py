"""The ladder progress record: append-only, hash-chained evidence of graded attempts, the
rules that turn evidence into demonstrated cells and levels, and the course's signing key."""
