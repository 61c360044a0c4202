"""Grading models: the classifier head on frozen features (``classifier``), temperature
calibration and decoding (``calibration``), fine-tuning (``finetune``) and the fine-tuned network
it produces (``finetuned``), the hold-out skeleton both kinds train on (``holdout``), and the model
artifact that owns the on-disk format of both (``artifact``)."""
