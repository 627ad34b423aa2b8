"""The HTML audit report: tables, plots and image grids of one or more runs, in one file.

``audit-cli report RUN [RUN ...]`` (:mod:`audit.report.cli`) or, from Python::

    from audit.report.build import make_report
    url, report = make_report(["audit-output/<run_id>"])

Each section is one module of :mod:`audit.report.sections`, found through its registry.
"""
