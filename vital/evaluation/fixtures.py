"""Tiny evaluation sets shaped like the real ones, built from the bundled sample images (offline tests, quickstart).

* `raw_vqa_rad` / `raw_path_vqa`: ``DatasetDict`` s with the columns of ``flaviagiammarino/vqa-rad`` (train, test) and
  ``flaviagiammarino/path-vqa`` (train, validation, test): ``image``, ``question``, ``answer``; no answer type.
* `write_raw_slake`: a folder laid out like ``BoKelvin/SLAKE``: ``train.json`` / ``validation.json`` / ``test.json``
  (``img_id``, ``img_name``, ``question``, ``answer``, ``q_lang`` en/zh, ``answer_type`` OPEN/CLOSED, ``qid``, ...)
  and ``imgs.zip`` holding ``imgs/xmlab<N>/source.jpg``.
* `write_open_chat`: LLaVA-Med's open-chat question JSONL and an image folder.
* `write_llava_med_vqa`: a folder with ``test.json`` in LLaVA-Med's evaluation format (``id``, ``image``,
  ``conversations``, ``answer_type``) or BioMed-VITAL's (integer ids, ``CLOSE``, the misspelt ``conversatons``) and
  ``images/``.
* `push_fixtures`: all of them to a hub, returning the benchmark specs and the chat repo to evaluate on.
* `pin_fixtures`: a run's benchmark specs and chat repo with the fixture repos pinned to their commits.

The questions and answers are generated from the sample pairs' modality and caption; they test plumbing, not models.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Image, Value

from vital.evaluation.benchmarks import BenchmarkSpec, is_pinned
from vital.hub import Hub, HubError, parse_repo_ref


RAW_VQA_FEATURES = Features({"image": Image(), "question": Value("string"), "answer": Value("string")})

_MODALITY_NAME = {"chest_xray": "x-ray", "ct": "ct", "mri": "mri", "histology": "histology"}
_CHAT_DOMAIN = {"chest_xray": "chest_xray", "ct": "ct_scan", "mri": "mri", "histology": "histology"}
FIXTURE_REPOS = {
    "vqa-rad": "fixtures/vqa-rad",
    "slake": "fixtures/slake",
    "path-vqa": "fixtures/path-vqa",
    "chat": "fixtures/llava-med-chat",
}


def _pairs():
    from vital.data.sample import load_sample_pairs

    return load_sample_pairs().cast_column("image", Image(decode=False))


def _modality(pair: dict[str, Any]) -> str:
    return _MODALITY_NAME.get(pair["modality"], "other")


def _qa(pair: dict[str, Any], k: int) -> tuple[str, str]:
    """The k-th question about a pair: alternately closed (yes/no) and open."""
    name = _modality(pair)
    if k % 2 == 0:
        asked = "ct" if name != "ct" else "mri"
        yes = k % 4 == 0
        return f"Is this a {name if yes else asked} image?", "yes" if yes else "no"
    first_words = " ".join(pair["caption"].split()[:3]).strip(".,").lower()
    return ("What imaging modality is shown?", name) if k % 3 else ("What does the caption begin with?", first_words)


def _vqa_split(pairs, start: int, count: int) -> Dataset:
    rows = []
    for k in range(count):
        pair = pairs[(start + k) % len(pairs)]
        question, answer = _qa(pair, start + k)
        rows.append({"image": pair["image"], "question": question, "answer": answer})
    return Dataset.from_list(rows, features=RAW_VQA_FEATURES)


def raw_vqa_rad(n_test: int = 6, n_train: int = 4) -> DatasetDict:
    """A VQA-RAD-shaped ``DatasetDict`` (train, test): ``image``, ``question``, ``answer``."""
    pairs = _pairs()
    return DatasetDict({"train": _vqa_split(pairs, 100, n_train), "test": _vqa_split(pairs, 0, n_test)})


def raw_path_vqa(n_test: int = 6, n_other: int = 3) -> DatasetDict:
    """A PathVQA-shaped ``DatasetDict`` (train, validation, test): ``image``, ``question``, ``answer``."""
    pairs = _pairs()
    return DatasetDict(
        {
            "train": _vqa_split(pairs, 200, n_other),
            "validation": _vqa_split(pairs, 300, n_other),
            "test": _vqa_split(pairs, 7, n_test),
        }
    )


def _jpeg(cell: dict[str, Any]) -> bytes:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(cell["bytes"])) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=90)
        return out.getvalue()


def write_raw_slake(folder: str | Path, n_test: int = 6, n_other: int = 3) -> Path:
    """A folder laid out like ``BoKelvin/SLAKE``; each split mixes English and Chinese (``q_lang: zh``) questions.

    ``n_test`` English test questions are written (plus Chinese ones that the loader must drop).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = _pairs()
    qid, used = 0, {}
    splits = {"train": (400, n_other), "validation": (500, n_other), "test": (11, n_test)}
    for split, (start, count) in splits.items():
        records = []
        for k in range(count):
            index = (start + k) % len(pairs)
            pair = pairs[index]
            img_id = index + 1
            used[img_id] = pair["image"]
            question, answer = _qa(pair, start + k)
            common = {
                "img_id": img_id,
                "img_name": f"xmlab{img_id}/source.jpg",
                "location": "Chest" if pair["modality"] == "chest_xray" else "Abdomen",
                "modality": _modality(pair).upper(),
                "base_type": "vqa",
                "content_type": "Modality",
                "triple": ["vhead", "_", "_"],
            }
            kind = "CLOSED" if answer in ("yes", "no") else "OPEN"
            records.append(
                {**common, "question": question, "answer": answer, "q_lang": "en", "answer_type": kind, "qid": qid}
            )
            qid += 1
            zh_answer = {"yes": "是", "no": "否"}.get(answer, answer)
            records.append(
                {
                    **common,
                    "question": "这是什么类型的影像？",
                    "answer": zh_answer,
                    "q_lang": "zh",
                    "answer_type": kind,
                    "qid": qid,
                }
            )
            qid += 1
        (folder / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    with zipfile.ZipFile(folder / "imgs.zip", "w") as zf:
        for img_id, cell in sorted(used.items()):
            info = zipfile.ZipInfo(f"imgs/xmlab{img_id}/source.jpg", date_time=(2024, 1, 1, 0, 0, 0))
            zf.writestr(info, _jpeg(cell))
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n\nSLAKE-shaped test fixture.\n")
    return folder


def open_chat_records(n: int = 4) -> list[dict[str, Any]]:
    """LLaVA-Med open-chat question records about the first ``n`` sample pairs (half conversation, half detail)."""
    pairs = _pairs()
    records = []
    for k in range(n):
        pair = pairs[k % len(pairs)]
        detail = k % 2 == 1
        text = "Describe the image in detail." if detail else f"What does this {_modality(pair)} image show?"
        domain = dict.fromkeys(("chest_xray", "mri", "histology", "gross", "ct_scan"), False)
        if pair["modality"] in _CHAT_DOMAIN:
            domain[_CHAT_DOMAIN[pair["modality"]]] = True
        records.append(
            {
                "question_id": k,
                "image": Path(pair["image"]["path"]).name,
                "pair_id": pair["id"],
                "text": text,
                "gpt4_answer": pair["caption"],
                "fig_caption": pair["caption"],
                "in_text_mention": [{"tokens": m, "entities": []} for m in pair["mentions"]],
                "domain": domain,
                "type": "detailed_description" if detail else "conversation",
            }
        )
    return records


def write_open_chat(folder: str | Path, n: int = 4) -> Path:
    """``questions.jsonl`` and ``images/`` in ``folder`` (LLaVA-Med's open-chat layout)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = open_chat_records(n)
    pairs = {row["id"]: row for row in _pairs()}
    with open(folder / "questions.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
            (folder / "images" / record["image"]).write_bytes(pairs[record["pair_id"]]["image"]["bytes"])
    return folder


def llava_med_vqa_records(n: int = 6, style: str = "llava-med") -> list[dict[str, Any]]:
    """VQA items in LLaVA-Med's evaluation format (``style="llava-med"``: string ids, ``CLOSED``/``OPEN``) or as
    BioMed-VITAL's evaluation scripts read them (``style="biomed-vital"``: integer ids, ``CLOSE``/``open``, the
    ``conversatons`` key, an integer answer)."""
    pairs = _pairs()
    records = []
    for k in range(n):
        pair = pairs[k % len(pairs)]
        question, answer = _qa(pair, k)
        closed = answer in ("yes", "no")
        if style == "biomed-vital":
            if k == n - 1:
                question, answer, closed = "How many panels does the figure have?", 1, False
            turns_key, qid, kind = "conversatons", 1000 + k, "CLOSE" if closed else "open"
        else:
            turns_key, qid, kind = "conversations", f"{pair['id']}-q{k}", "CLOSED" if closed else "OPEN"
        records.append(
            {
                "id": qid,
                "image": f"{pair['id']}.jpg",
                turns_key: [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
                "answer_type": kind,
            }
        )
    return records


def write_llava_med_vqa(folder: str | Path, records: list[dict[str, Any]] | None = None, split: str = "test") -> Path:
    """``<split>.json`` and ``images/`` (JPEGs of the sample pairs) in ``folder``: a repo in LLaVA-Med's VQA layout."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = llava_med_vqa_records() if records is None else records
    pairs = {f"{row['id']}.jpg": row["image"] for row in _pairs()}
    for record in records:
        if record["image"] in pairs:
            (folder / "images" / record["image"]).write_bytes(_jpeg(pairs[record["image"]]))
    (folder / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


def push_fixtures(hub: Hub, repos: dict[str, str] | None = None, only_missing: bool = True) -> dict[str, Any]:
    """Push the four fixtures to ``hub`` (repos of `FIXTURE_REPOS` unless given).

    Returns ``{"benchmarks": [spec, ...], "chat": "repo@commit"}`` with every revision pinned to the pushed commit.
    With ``only_missing`` a repo that already exists is left as it is.
    """
    repos = {**FIXTURE_REPOS, **(repos or {})}

    def exists(repo_id: str) -> bool:
        try:
            hub.resolve(repo_id)
            return True
        except HubError:
            return False

    for name, build in (("vqa-rad", raw_vqa_rad), ("path-vqa", raw_path_vqa)):
        if not (only_missing and exists(repos[name])):
            hub.push_dataset(build(), repos[name], commit_message=f"{name}-shaped fixture")
    with tempfile.TemporaryDirectory() as tmp:
        if not (only_missing and exists(repos["slake"])):
            hub.upload_folder(write_raw_slake(Path(tmp, "slake")), repos["slake"], commit_message="SLAKE fixture")
        if not (only_missing and exists(repos["chat"])):
            hub.upload_folder(write_open_chat(Path(tmp, "chat")), repos["chat"], commit_message="open-chat fixture")
    specs = [f"{name}={repos[name]}:test" for name in ("vqa-rad", "slake", "path-vqa")]
    specs, chat = pin_fixtures(hub, specs, repos["chat"], repos)
    return {"benchmarks": specs, "chat": chat}


def pin_fixtures(
    hub: Hub, benchmarks: Sequence[str], chat_questions: str | None, repos: dict[str, str] | None = None
) -> tuple[list[str], str | None]:
    """The benchmark specs and chat repo with every fixture repo (`FIXTURE_REPOS` unless given) pinned to its
    commit on ``hub`` now: a run that has just pushed the fixtures reads exactly what it pushed. Other repos, pinned
    revisions and local chat files are returned as they are."""
    fixtures = set({**FIXTURE_REPOS, **(repos or {})}.values())

    def pinned(repo_id: str, revision: str) -> str:
        return revision if is_pinned(revision) or repo_id not in fixtures else hub.resolve(repo_id, revision)

    specs = []
    for text in benchmarks:
        spec = BenchmarkSpec.parse(text)
        specs.append(str(replace(spec, revision=pinned(spec.repo_id, spec.revision))))
    if chat_questions and not Path(chat_questions).is_file():
        repo_id, revision = parse_repo_ref(chat_questions)
        chat_questions = f"{repo_id}@{pinned(repo_id, revision)}"
    return specs, chat_questions
