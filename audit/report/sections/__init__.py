"""The report's sections, one module each, in a registry (:mod:`.registry`).

A section module calls :func:`register_section` on its ``render`` function; every module of
this package is imported here, so a new file is all a new section needs (docs/architecture.md,
"Adding a report section"). :func:`audit.report.build.build_report` renders them in
``order``, and each one shows only when some run has its data (the summary names the others):

- ``summary``: the runs side by side, errors by stage and reason, each run's configuration;
- ``accuracy``: top-1/top-5 error and adversarial accuracy (the paper's Table 1), with the
  rectified and ReaL figures of the human-study tables when they exist;
- ``per_class``: errors by class, a sortable table;
- ``confusion``: the most-confused (true, predicted) class pairs;
- ``calibration``: the top-1 confidence against the accuracy in 15 bins, the expected and
  maximum calibration errors and a reliability diagram;
- ``misclassified``: a sample of misclassified images (Figure 3);
- ``adversarial``: adversarial accuracy, the ``steps_to_flip`` histogram, adversarial images
  beside their LIME explanations (Figures 5 and 6);
- ``classes``: per class, the prototypes and criticisms of every method (Figures 7, 8, 10);
- ``paths``: explanation paths (Figure 12);
- ``human``: every table under ``<run>/human/tables/`` (Tables 2 and 3, public judgments);
- ``bias`` and ``pairs``: the bias probe and the paired probe (:mod:`audit.report.bias`);
- ``candidates``: the automatic bias candidates (``bias_candidates``, docs/bias.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from audit.report.sections.context import SectionContext
from audit.report.sections.registry import (
    Section,
    get_section,
    register_section,
    registered_sections,
    unregister_section,
)

__all__ = [
    "Section",
    "SectionContext",
    "get_section",
    "register_section",
    "registered_sections",
    "unregister_section",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
