"""The long-running side of ladderlab: the learner's workspace, hand-in, the grading queue and feedback.

On one machine (``ladderlab lab``) it is one process beside JupyterLab, with no network listener at
all: learners hand in through nbgrader's own exchange (a directory), the service picks the
submission up, grades it through the one pipeline (fresh environment, sandbox, trusted checks) on a
persistent queue, writes nbgrader's gradebook and the ladder's evidence as the one trusted writer,
and releases nbgrader feedback into the exchange. Learners read their result from nbgrader's
feedback and from the submissions ledger (read only).

=======================  =============================================================
part                     owns
=======================  =============================================================
:mod:`.paths`            where the workspace, the instructor course root, the exchange,
                         the queue and the ledger live
:mod:`.workspace`        releasing labs with nbgrader and filling the learner's workspace
:mod:`.ledger`           one row per submission version: queued, grading, graded, error
:mod:`.queue`            the Huey queue, its workers, and grading one submission
:mod:`.handin`           handing a notebook in (``ladderlab submit``, ``lab.submit()``) and waiting
=======================  =============================================================
"""
