"""Images and labels before any network sees them: fundus preprocessing and the raw-to-filtered
domain mapping, photo quality measures, decoding ahead of a batch, ordered work ahead
(``pipelining``), augmentation, grouped splits and the ICDR lesion rubric. NumPy, Pillow and
scikit-learn; only ``augment`` uses TensorFlow, imported inside its functions. Imports nothing
else of ``mlcore``."""
