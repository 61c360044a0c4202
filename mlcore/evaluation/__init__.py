"""Scoring: agreement metrics (QWK, referable sensitivity and specificity, AUC, ECE), bootstrap
intervals, inter-grader agreement and the reports written beside a model. NumPy and SciPy only;
imports nothing else of ``mlcore``."""
