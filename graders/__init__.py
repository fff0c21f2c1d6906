"""ladderlab's checks, one module per skill domain.

Each module registers its checks with :func:`ladderlab.grading.checks.check`;
labs name them as ``<module>.<function>`` in ``labs/<id>/lab.yaml``. Modules
whose name starts with ``_`` are helpers, not domains.
"""
