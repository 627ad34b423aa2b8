"""``python -m audit.cli ...``: the same as ``audit-cli ...``."""

from audit.cli import app

app(prog_name="audit-cli")
