"""Grading models: the classifier head on frozen features, temperature calibration, fine-tuned
networks, and the model artifact that owns the on-disk format of both."""
