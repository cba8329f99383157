"""The pipeline's stages: one module per stage, each with its argument dataclasses, ``main()`` and ``cli()``.

``recipes/<stage>.py`` are thin scripts over these modules (``python``, ``accelerate launch``); ``vital <stage>`` runs
the same ``cli()``. The stage name is the module name; the select stage's script is ``recipes/select_data.py``, since
a ``recipes/select.py`` would shadow the standard library's ``select`` module for scripts run from that folder.
"""

STAGES = (
    "ingest",
    "import_released",
    "import_demos",
    "tiny_models",
    "curate_demos",
    "annotate",
    "generate",
    "rate",
    "train_selector",
    "sweep_clinician_weight",
    "select",
    "sft",
    "evaluate",
    "compare_evals",
    "pipeline",
    "bench",
)
"""Every stage, in pipeline order (``vital --help`` lists them)."""
