"""A saved selector loads with plain transformers calls, without biomed-vital, and scores as the package does."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vital.selector import score_texts_images
from vital.selector.remote_code import AUTO_MAP, REMOTE_CODE_DIR, REMOTE_CODE_FILES


TEXTS = ["Is there an effusion?\nYes, on the left.", "What modality is this?\nA chest radiograph in PA view."]


def _images():
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, size=(32, 32, 3)).astype(np.uint8)) for _ in TEXTS]


def test_remote_code_imports_only_torch_and_transformers():
    for name in REMOTE_CODE_FILES:
        tree = ast.parse((REMOTE_CODE_DIR / name).read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
        assert roots <= {"__future__", "collections", "copy", "re", "typing", "torch", "transformers", "open_clip"}, (
            roots
        )


def test_saved_selector_carries_its_code_and_auto_map(make_selector, processor, tmp_path):
    model = make_selector()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    for name in REMOTE_CODE_FILES:
        assert (tmp_path / name).read_bytes() == (REMOTE_CODE_DIR / name).read_bytes()


@pytest.mark.slow
def test_fresh_process_without_vital_loads_and_scores_identically(make_selector, processor, tmp_path):
    """The folder loads with AutoModel + trust_remote_code in a process whose environment holds only the venv (no
    PYTHONPATH, run from a folder outside the checkout, `vital` made unimportable), and scores as in-process."""
    model = make_selector(dropout=0.3, normalize_features=False)
    with torch.no_grad():  # a trained-looking head: not the init a fresh load would reproduce by chance
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / "selector"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    images = _images()
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    expected = score_texts_images(model, processor, images, TEXTS)

    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["vital"] = None  # any `import vital` now raises ImportError
        from PIL import Image
        import torch
        from transformers import AutoModel, AutoProcessor

        folder = {str(folder)!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        images = [Image.open(f"{{folder}}/../{{i}}.png").convert("RGB") for i in range({len(TEXTS)})]
        inputs = processor(text={TEXTS!r}, images=images, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            scores = model(**inputs).logits.squeeze(-1).tolist()
        print(json.dumps({{"scores": scores, "module": type(model).__module__}}))
        """
    )
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {"PATH": os.path.dirname(sys.executable), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # the dynamic-module cache lands here, not in the user's home
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules."), result["module"]
    assert not result["module"].startswith("vital")
    np.testing.assert_allclose(result["scores"], expected, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(result["scores"], 6))) == len(TEXTS)  # distinct inputs, distinct scores


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"head_activation": "sigmoid", "text_template": "{caption}{mentions}Question:{question}Answer:{answer}"},
    ],
    ids=["ours", "paper-head"],
)
def test_package_and_remote_classes_score_identically_in_process(make_selector, processor, tmp_path, options):
    """The folder's own copy of the code, loaded as transformers loads remote code, gives the package model's scores
    bit for bit (here `vital` is imported, so the Auto classes would pick the registered package class), for every
    head option (the official sigmoid head included)."""
    from transformers import AutoModel
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model = make_selector(hidden_sizes=[32, 16, 8], hidden_act="gelu", normalize_features=True, **options)
    model.save_pretrained(tmp_path)
    remote_class = get_class_from_dynamic_module(AUTO_MAP["AutoModel"], tmp_path)
    remote = remote_class.from_pretrained(tmp_path).eval()
    assert type(remote).__module__.startswith("transformers_modules.")
    local = AutoModel.from_pretrained(tmp_path).eval()  # the registered package class
    assert type(local).__module__ == "vital.selector.modeling"
    images = _images()
    assert score_texts_images(remote, processor, images, TEXTS) == score_texts_images(local, processor, images, TEXTS)
    assert sorted(remote.state_dict()) == sorted(local.state_dict())
    assert Path(tmp_path / "modeling_vital_selector.py").is_file()
    assert remote.config.head_activation == local.config.head_activation == options.get("head_activation")


def test_the_selector_cards_use_snippet_runs_as_written(make_selector, processor, tmp_path):
    """The selector card's snippet (plain transformers, trust_remote_code) loads the pushed selector at its branch
    from a local hub and scores as the package does."""
    import jinja2

    from vital.cards import TEMPLATE_DIRS
    from vital.hub import LocalHub
    from vital.testing.card_snippets import python_blocks, run_on_local_hub

    model = make_selector()
    folder = tmp_path / "selector"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    hub = LocalHub(tmp_path / "hub")
    hub.create_repo("org/selector", "model")
    hub.create_branch("org/selector", "w0.5", repo_type="model")
    hub.push_folder(folder, "org/selector", "model", revision="w0.5")
    template = (TEMPLATE_DIRS["model"] / "selector.md").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    context = {"repo_id": "org/selector", "revision": "w0.5", "text_fields": ["question", "answer"]}
    (code,) = [env.from_string(block).render(**context) for block in python_blocks(template)]
    assert "vital" not in code and "trust_remote_code=True" in code
    images = _images()
    scope = run_on_local_hub(code, hub, "model", {"images": images, "texts": TEXTS})
    expected = score_texts_images(model, processor, images, TEXTS)
    np.testing.assert_allclose(scope["scores"].tolist(), expected, rtol=1e-5, atol=1e-6)


def test_remote_config_has_the_same_fields_and_defaults_as_the_package_config(tmp_path):
    """A field added to vital's SelectorConfig (a new head option, say) must be added to the remote copy too."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from vital.selector import SelectorConfig
    from vital.selector.remote_code import write_remote_code

    write_remote_code(tmp_path)
    remote = get_class_from_dynamic_module(AUTO_MAP["AutoConfig"], tmp_path)
    assert remote.__annotations__.keys() == SelectorConfig.__annotations__.keys()
    for name in SelectorConfig.__annotations__:
        assert getattr(remote, name) == getattr(SelectorConfig, name), name
