"""The one base class of the errors meant for the user.

Every error whose message is a one-line reason for the person at the command line (a bad
config value, an unknown run, an unreachable cluster, a malformed results file...) derives from
:class:`AuditError`, next to the built-in class it has always been (``ConfigError`` is still a
``ValueError``). ``audit-cli`` catches :class:`AuditError` at its boundary and prints
``error: <message>`` (:func:`audit.cli.common.one_line_errors`); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class AuditError(Exception):
    """A failure the user can act on; the message is one line naming what to fix.

    Example::

        class ConfigError(AuditError, ValueError):
            '''A configuration value is invalid.'''
    """
