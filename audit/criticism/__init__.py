"""The criticism stage: per-class prototypes and criticisms.

- :mod:`audit.criticism.mmd`: the MMD-critic objectives and solvers (numpy only);
- :mod:`audit.criticism.frame`: :class:`ClassFrame`, the one input of every selector;
- :mod:`audit.criticism.selectors`: the selectors, their registry and skip rules;
- :mod:`audit.criticism.tasks`: the Ray adapter, one task per class.
"""
