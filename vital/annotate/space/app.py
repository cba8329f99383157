"""The BioMed-VITAL annotation app as a Hugging Face Space: clinicians sign in with their Hugging Face account.

Deploy: create a Gradio Space (private, or in your organisation), copy this folder into it (``README.md`` switches on
``hf_oauth``), and set these Space variables and secrets:

================== ====================================================================================================
``VITAL_TASK``     ``demos``, ``preference`` or ``rating``
``VITAL_DATASET``  ``repo@revision`` of the items on the Hub (answer pairs, candidates, or the clusters repo)
``VITAL_CANDIDATES`` demos: ``repo@revision`` of the candidates whose conversations are shown
``VITAL_DATASET_CONFIG`` the dataset config, if not the default (``review`` is picked for demos when present)
``VITAL_PAIRS``     preference: ``repo@revision`` of the figure-caption pairs (caption and mentions shown with questions)
``VITAL_GUIDELINES`` path of the campaign's own guidelines (Markdown) in the Space; default: the task's built-in ones
``VITAL_ANNOTATORS`` comma-separated Hugging Face usernames allowed to annotate (recommended; default: anyone signed in)
``VITAL_CAMPAIGN_LEADS`` comma-separated Hugging Face usernames who see the Campaign tab (progress, agreement,
                   adjudication); list them in ``VITAL_ANNOTATORS`` too
``VITAL_STORE``    folder of the annotation files; default ``/data/annotations`` with the Space's persistent storage
``VITAL_STORE_REPO`` optional private dataset repo the store is copied to every 5 minutes and restored from on a fresh
                   start (``huggingface_hub.CommitScheduler``): annotations survive a Space without persistent storage
``HF_TOKEN``       secret: reads the private datasets (and writes ``VITAL_STORE_REPO``)
================== ====================================================================================================

Export the annotations anywhere the store is (or its backup repo, downloaded)::

    vital annotate --export --task preference --dataset org/answer-pairs --store annotations --hub hf
"""

import logging
import os
from pathlib import Path

from vital.annotate.app import AnnotationApp
from vital.annotate.auth import allowed_annotators
from vital.annotate.guidelines import load_guidelines
from vital.annotate.items import load_items
from vital.annotate.store import AnnotationStore
from vital.annotate.tasks import AnnotationTask
from vital.hub import get_hub


logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("vital.annotate.space")

task_name = os.environ["VITAL_TASK"]
store_dir = Path(os.environ.get("VITAL_STORE") or ("/data/annotations" if Path("/data").is_dir() else "annotations"))
store_dir.mkdir(parents=True, exist_ok=True)

backup_repo = os.environ.get("VITAL_STORE_REPO")
if backup_repo:
    from huggingface_hub import CommitScheduler, snapshot_download

    if not any(store_dir.rglob("*.jsonl")):  # a fresh disk: restore the last backup before serving anyone
        try:
            snapshot_download(backup_repo, repo_type="dataset", local_dir=store_dir, allow_patterns=["**/*.jsonl"])
            logger.info("store restored from %s", backup_repo)
        except Exception as error:  # a first start, before any backup exists
            logger.warning("no store restored from %s: %s", backup_repo, error)
    CommitScheduler(
        repo_id=backup_repo,
        repo_type="dataset",
        folder_path=store_dir,
        every=5,
        private=True,
        allow_patterns="**/*.jsonl",
    )

allowed = allowed_annotators()
if allowed is None:
    logger.warning("VITAL_ANNOTATORS is not set: any signed-in Hugging Face user may annotate")

items = load_items(
    get_hub(os.environ.get("VITAL_HUB", "hf")),
    task_name,
    os.environ["VITAL_DATASET"],
    config=os.environ.get("VITAL_DATASET_CONFIG") or None,
    candidates=os.environ.get("VITAL_CANDIDATES") or None,
    pairs=os.environ.get("VITAL_PAIRS") or None,
)
guidelines = load_guidelines(task_name, os.environ.get("VITAL_GUIDELINES") or None)
guidelines.save(store_dir)
leads = {n.strip() for n in os.environ.get("VITAL_CAMPAIGN_LEADS", "").split(",") if n.strip()}
task = AnnotationTask(items, AnnotationStore(store_dir), guidelines=guidelines)
app = AnnotationApp(task, space=True, allowed=allowed, campaign_leads=leads)
app.launch(host="0.0.0.0", port=int(os.environ.get("PORT", 7860)))
