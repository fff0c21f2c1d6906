"""ladderlab: hands-on SRE skills lab, graded against disposable Docker environments."""

__version__ = "0.1.0"
