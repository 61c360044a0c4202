"""Images and labels before any network sees them: fundus preprocessing and the raw-to-filtered
domain mapping, photo quality measures, decoding, augmentation, grouped splits and the ICDR lesion
rubric. NumPy and Pillow only (no TensorFlow); imports nothing else of ``mlcore``."""
