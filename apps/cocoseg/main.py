"""MONAI Label app folder for CoCoSeg:

    monailabel start_server --app apps/cocoseg --studies STUDIES [--conf weights logs/models/model.pt ...]

MONAI Label loads this file and serves the ``MONAILabelApp`` subclass it finds here; the app
itself lives in the package (:mod:`cocoseg_monai.label.app`). Served and fine-tuned weights go
to ``model/`` beside this file unless ``--conf model_dir`` says otherwise.
"""

from cocoseg_monai.label.app import CoCoSegApp  # noqa: F401  (found by MONAI Label)
