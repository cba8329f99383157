"""The clinicians' annotation app (BioMed-VITAL's clinician demonstrations and preferences).

Three tasks, each a Gradio app launched by ``vital annotate --task demos|preference|rating --dataset repo@rev``:

- ``demos``: a figure with its caption, mentions and a candidate conversation; accept, edit or reject it.
- ``preference``: a question with two answers in an order drawn per annotator and item (never revealed on screen);
  answer A, answer B or same quality.
- ``rating``: a question-answer turn scored 0-10 with the clinicians' scale in the guidelines.

Modules: `store` (durable append-only annotations, field size limits), `items` (what each task shows, read from the
hub), `tasks` (views, clicks, progress, side randomisation, turn-by-turn edits), `guidelines` (what clinicians read,
versioned and recorded with every annotation), `auth` (hashed passwords and roles, sign-in throttling, request size
limits, Hugging Face OAuth), `agreement` (percent agreement, Cohen's kappa for export cards), `campaign` (the campaign
lead's view: progress, kappa with a bootstrap interval, conflicts, adjudication, the adjudicated set), `export` (to the
``demos``, ``preferences`` and ``ratings`` datasets with cards) and `app` (the Gradio UI, imported on demand so that
exporting needs no gradio). ``space/`` deploys the app as a Space.
"""

from vital.annotate.agreement import AgreementReport, cohen_kappa, pairwise_agreement, percent_agreement
from vital.annotate.auth import (
    LoginThrottle,
    RequestGuard,
    hash_password,
    load_roles,
    load_users,
    make_auth,
    resolve_annotator,
    verify_password,
)
from vital.annotate.campaign import Campaign
from vital.annotate.export import build_export, default_output_repo, push_export
from vital.annotate.guidelines import Guidelines, load_guidelines
from vital.annotate.items import TaskItems, load_items
from vital.annotate.store import Annotation, AnnotationStore, AnonymousWriteError, store_sha256
from vital.annotate.tasks import AnnotationTask, ItemView, shown_order


__all__ = [
    "AgreementReport",
    "Annotation",
    "AnnotationStore",
    "AnnotationTask",
    "AnonymousWriteError",
    "Campaign",
    "Guidelines",
    "LoginThrottle",
    "RequestGuard",
    "ItemView",
    "TaskItems",
    "build_export",
    "cohen_kappa",
    "default_output_repo",
    "hash_password",
    "load_guidelines",
    "load_items",
    "load_roles",
    "load_users",
    "make_auth",
    "pairwise_agreement",
    "percent_agreement",
    "push_export",
    "resolve_annotator",
    "shown_order",
    "store_sha256",
    "verify_password",
]
