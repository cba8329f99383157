"""The pipeline's pictures are legible: the lineage graph keeps labels inside boxes and edges out of boxes, and the
eval comparison chart shows zero bars and names models by repo id and revision."""

from matplotlib.backends.backend_agg import FigureCanvasAgg

from vital.evaluation.results import comparison_figure
from vital.lineage import Artifact, figure


def _artifact(repo: str, commit: str, inputs: list[str], headline: str = "default 15 rows") -> Artifact:
    return Artifact(repo, "dataset", "main", commit * 40, "", 1, 1, headline, "stage", inputs)


def pipeline_artifacts() -> list[Artifact]:
    """The quickstart's shape: a chain with long edges (pairs -> selected, tiny-llava -> sft), fan-in (selector), a
    long headline, and inputs from outside the run (earlier commits)."""
    names = ["pairs", "demos", "cands", "ratings", "spairs", "selector", "selected", "sft", "eval", "clip", "llava"]
    c = dict(zip(names, "0123456789a"))
    ref = {k: f"quickstart/{k}@{v * 40}" for k, v in c.items()}
    return [
        _artifact("quickstart/pairs", c["pairs"], []),
        _artifact("quickstart/clip", c["clip"], []),
        _artifact("quickstart/llava", c["llava"], []),
        _artifact("quickstart/demos", c["demos"], [ref["pairs"]]),
        _artifact("quickstart/cands", c["cands"], [ref["pairs"], ref["demos"]]),
        _artifact("quickstart/ratings", c["ratings"], [ref["cands"]]),
        _artifact("quickstart/spairs", c["spairs"], [ref["cands"], ref["ratings"]]),
        _artifact("quickstart/selector", c["selector"], [ref["spairs"], ref["clip"], ref["cands"], ref["ratings"]]),
        _artifact("quickstart/selected", c["selected"], [ref["selector"], ref["cands"], ref["pairs"]], "x" * 80),
        _artifact("quickstart/sft", c["sft"], [ref["selected"], ref["llava"]]),
        _artifact("quickstart/eval", c["eval"], ["fixtures/vqa-rad@" + "e" * 40, "quickstart/sft@" + "f" * 40]),
    ]


def _data_bbox(ax, artist, renderer):
    return artist.get_window_extent(renderer).transformed(ax.transData.inverted())


def _crosses(segment, box, eps=0.5) -> bool:
    """Whether a segment passes through the inside of a box (Liang-Barsky clipping against the box shrunk by eps)."""
    (x0, y0), (x1, y1) = segment
    bx0, by0, bx1, by1 = box[0] + eps, box[1] + eps, box[2] - eps, box[3] - eps
    t0, t1, dx, dy = 0.0, 1.0, x1 - x0, y1 - y0
    for p, q in ((-dx, x0 - bx0), (dx, bx1 - x0), (-dy, y0 - by0), (dy, by1 - y0)):
        if p == 0:
            if q < 0:
                return False
        else:
            t = q / p
            if p < 0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
    return t0 < t1


def test_lineage_labels_sit_inside_their_boxes_and_edges_avoid_other_boxes():
    artifacts = pipeline_artifacts()
    fig = figure(artifacts)
    renderer = FigureCanvasAgg(fig).get_renderer()
    (ax,) = fig.axes
    boxes = {p.get_gid()[4:]: p for p in ax.patches if (p.get_gid() or "").startswith("box:")}
    labels = {t.get_gid()[6:]: t for t in ax.texts if (t.get_gid() or "").startswith("label:")}
    assert set(boxes) == set(labels) and len(boxes) == len(artifacts) + 2  # + vqa-rad and an earlier sft commit
    rects = {}
    for node, patch in boxes.items():
        x0, y0 = patch.get_xy()
        rects[node] = (x0, y0, x0 + patch.get_width(), y0 + patch.get_height())
        text = _data_bbox(ax, labels[node], renderer)
        assert rects[node][0] < text.x0 and text.x1 < rects[node][2], (node, text, rects[node])
        assert rects[node][1] < text.y0 and text.y1 < rects[node][3], (node, text, rects[node])
        assert node.split("@")[0] in labels[node].get_text()
    for a, b in [(m, n) for m in rects for n in rects if m < n]:  # boxes do not overlap each other either
        ra, rb = rects[a], rects[b]
        assert ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1], (a, b)

    edges = {}
    for line in ax.lines:
        u, v = line.get_gid()[5:].split("->")
        edges.setdefault((u, v), []).extend(zip(line.get_xdata(), line.get_ydata()))
    for patch in ax.patches:
        if (patch.get_gid() or "").startswith("arrow:"):
            u, v = patch.get_gid()[6:].split("->")
            edges[(u, v)] = [*edges.get((u, v), []), *patch._posA_posB]
    expected = {(u, a.node) for a in artifacts for u in a.inputs}
    assert set(edges) == expected
    long_edges = 0
    for (u, v), points in edges.items():
        assert points[0][0] == rects[u][2] and points[-1][0] == rects[v][0]  # out of u's right side, into v's left
        long_edges += len(points) > 3
        for segment in zip(points, points[1:]):
            for node, rect in rects.items():
                if node not in (u, v):
                    assert not _crosses(segment, rect), f"edge {u} -> {v} passes through {node}"
    assert long_edges >= 3  # the layout did route edges that skip columns


def test_crossing_check_sees_a_line_through_a_box():  # the geometry helper itself can fail
    assert _crosses(((0, 5), (20, 5)), (5, 0, 10, 10))
    assert not _crosses(((0, 15), (20, 15)), (5, 0, 10, 10))
    assert not _crosses(((10, 5), (20, 5)), (5, 0, 10, 10))  # starting on the box's side is not crossing it


def _summary(model: str, closed: float, open_: float | None) -> list[dict]:
    rows = [("closed_accuracy", closed), ("open_recall", open_)]
    return [
        {
            "model": model,
            "task": "vqa",
            "benchmark": "vqa-rad",
            "split": "test",
            "metric": metric,
            "mode": "legacy",
            "group": "",
            "value": value,
            "n": 10,
            "dataset_repo": "fixtures/vqa-rad",
            "dataset_revision": "a" * 40,
        }  # fmt: skip
        for metric, value in rows
        if value is not None
    ]


def test_comparison_chart_shows_zero_bars_and_names_the_models():
    summaries = {
        "quickstart/sft-tiny-llava@quickstart": _summary("quickstart/sft-tiny-llava@quickstart", 0.0, 12.5),
        "quickstart/tiny-llava@main": _summary("quickstart/tiny-llava@main", 50.0, None),
    }
    fig = comparison_figure(summaries, "legacy")
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(summaries)
    values = [t.get_text() for t in ax.texts]
    assert values.count("0") == 1 and "12.5" in values and "50" in values and "n/a" in values
    zero_label = next(t for t in ax.texts if t.get_text() == "0")
    FigureCanvasAgg(fig).draw()
    assert zero_label.get_visible() and zero_label.get_window_extent().height > 0
    # A zero or missing value also gets a marker on the axis, so the slot does not read as empty.
    markers = [line for line in ax.lines if len(line.get_xdata())]
    assert sum(len(line.get_xdata()) for line in markers) == 2


def test_evaluated_models_are_named_by_repo_id_and_revision_never_a_path(tmp_path):
    from vital.hub import ArtifactRef
    from vital.sft import ModelSource, display_name

    ref = ArtifactRef("quickstart/sft-tiny-llava", "model", "quickstart", "c" * 40)
    snapshot = ModelSource(str(tmp_path / "snapshots" / ("c" * 40)), None, ref.repo_id, ref)
    assert display_name(snapshot) == "quickstart/sft-tiny-llava@quickstart"
    assert display_name(ModelSource("org/vlm", "v1.0", "org/vlm", {"repo_id": "org/vlm"})) == "org/vlm@v1.0"
    folder = ModelSource(str(tmp_path / "my-model"), None, None, {"source": str(tmp_path / "my-model")})
    assert display_name(folder) == "my-model"
