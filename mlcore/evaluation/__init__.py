"""Scoring: agreement metrics (QWK, referable sensitivity and specificity, AUC, ECE), bootstrap
intervals, inter-grader agreement and the reports written beside a model. NumPy, SciPy,
scikit-learn and matplotlib (the last three imported inside the functions that need them);
imports nothing else of ``mlcore``."""
