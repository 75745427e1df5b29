"""Radiology report drafting from DICOM CT/MR studies (issue 7, medical reports).

Modules, one concern each:

- :mod:`~inspector.medical.dicom`: pydicom input: files, series, HU rescale, windows, MR normalisation.
- :mod:`~inspector.medical.phantom`: synthetic CT studies written as real DICOM files, with ground truth.
- :mod:`~inspector.medical.vocab`: report text: phrasings, the word-piece tokenizer.
- :mod:`~inspector.medical.measure`: lesion components → findings in millimetres and HU.
- :mod:`~inspector.medical.report`: the model (image + patient, DMA, segmentation + text decoder) and drafting.
- :mod:`~inspector.medical.metrics`: BLEU-1..4 (sacrebleu), ROUGE-L, finding-level P/R/F1.
- :mod:`~inspector.medical.training`: DAPT of the decoder, then supervised fine-tuning.
- :mod:`~inspector.medical.evaluation`: held-out figures on written phantom studies.
- :mod:`~inspector.medical.request`: a ``medical.studies`` record → a checked request (the worker's input).

All data here is synthetic unless it comes from pydicom's shipped test files.
"""

from inspector.medical.errors import MedicalError

__all__ = ["MedicalError"]
