"""Human studies (Stock & Cisse 2018, section 3): export tasks, ingest answers, compute the
rectified errors and the paper's tables, and the same figures from public judgments.

Modules, in pipeline order: ``config`` (settings), ``studies`` (which items), ``render``
(images), ``mturk`` (CSV formats), ``export``, ``ingest``, ``analysis``, ``judgments`` (ReaL,
cleanlab, MadryLab: one file per source), ``storage`` (where files go), ``cli`` (``audit-cli human``).
"""
