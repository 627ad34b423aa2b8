"""Automatic bias discovery: pure functions (NumPy, SciPy, scikit-learn; no Ray, no I/O) that
turn a run's tables into ranked bias candidates, and :mod:`audit.bias.discover`, which applies
them to a run's stored tables and object boxes (the run's ``bias`` step, docs/bias.md).

- :mod:`audit.bias.context`: context reliance of one LIME explanation (how much of its positive
  weight and of its top-K super-pixels lies outside the object's boxes), per-class summaries
  and permutation tests, and a ranking of classes by how much the model decides from context.
- :mod:`audit.bias.coactivation`: the model's other classes as concept detectors: which classes'
  scores separate two groups of one class's images (prototypes vs criticisms, correct vs
  errors), with Mann-Whitney U and Benjamini-Hochberg.
- :mod:`audit.bias.slices`: fragile slices: seeded k-means clusters of one class's embeddings,
  scored by error rate and IFGSM steps to flip.
- :mod:`audit.bias.candidates`: the ``bias_candidates`` table schema and the builders that turn
  the three analyses' outputs into its rows, ranked within kind.
- :mod:`audit.bias.discover`: the ``bias_candidates`` table of a run: reads the explanations,
  predictions, attack steps and selections with the boxes mapped into the model's crop.
"""
