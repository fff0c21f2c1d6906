"""The course: ``course.yaml`` (the ladder and the labs placed on it), each lab's definition
(``labs/<id>/``: notebook, lab.yaml, decoys), the ladder's source documents, and the
per-learner seeds that vary a lab's parameters. Nothing here touches Docker or grades.

Modules: :mod:`~ladderlab.course.model` (course.yaml), :mod:`~ladderlab.course.labs` (a lab's
definition, cross-checked against a check registry the caller passes in),
:mod:`~ladderlab.course.loading` (YAML into validated models, errors naming file and field),
:mod:`~ladderlab.course.sources` (the seed documents), :mod:`~ladderlab.course.seeds`.
"""

from ladderlab.course.model import Course, Lab, load_course

__all__ = ["Course", "Lab", "load_course"]
