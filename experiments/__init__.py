"""The paper's experiments, their evaluators and the scripts that made the shipped weights.

Applications built on the public ``recompose`` library (which never imports this package).
Run each from the repository root, e.g. ``python -m experiments.toy2d``; the table of
commands is in ``experiments/README.md``.
"""
