"""Prototype and criticism selectors for one class, in scikit-learn's shape (no Ray here).

The four methods of Stock & Cisse (2018, section 3.3), one module each, registered by their
name (the method name of ``criticism.methods``): :mod:`.adversarial`, :mod:`.mmd_critic`,
:mod:`.probability`, :mod:`.random_draw`. :mod:`.base` is the protocol (:class:`Selector`),
:mod:`.registry` looks them up and decides which a run can execute (:func:`runnable_methods`).

The registry imports every module of this folder the first time it is used, so a new selector
is one new file here that decorates its class with :func:`register_selector`; the run config
accepts its name and runs it by default.

Example:
    >>> from audit.criticism.frame import ClassFrame
    >>> sel = get_selector("random")(n_prototypes=2, n_criticisms=1).fit(
    ...     ClassFrame(0, ["a", "b", "c"]))
    >>> len(sel.prototypes_), len(sel.criticisms_)
    (2, 1)
"""

from audit.criticism.selectors.base import Selector
from audit.criticism.selectors.registry import (
    get_selector,
    register_selector,
    required_columns,
    runnable_methods,
    selector_names,
    unregister_selector,
)

__all__ = [
    "Selector",
    "get_selector",
    "register_selector",
    "required_columns",
    "runnable_methods",
    "selector_names",
    "unregister_selector",
]
