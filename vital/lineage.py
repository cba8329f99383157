"""The artifacts of a pipeline run and how they connect: headline figures read back from the hub, and a lineage
graph (every artifact tied to the inputs its card names) drawn as a picture and as Mermaid text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vital.cards import lineage_of
from vital.hub import Hub, PushResult


@dataclass
class Artifact:
    """One repo as the run left it: its last commit, what it holds, and the artifacts it was made from."""

    repo_id: str
    repo_type: str
    revision: str
    commit: str
    location: str
    commits_this_run: int
    new_commits: int
    headline: str = ""
    stage: str = ""
    inputs: list[str] = field(default_factory=list)  # "repo_id@commit" of upstream artifacts

    @property
    def node(self) -> str:
        return f"{self.repo_id}@{self.commit}"


def headline(hub: Hub, repo_id: str, commit: str, repo_type: str) -> str:
    """What an artifact holds, from its card: rows per config for a dataset, results for a model."""
    card = hub.read_card(repo_id, commit, repo_type)
    if card is None:
        return ""
    data = card.data.to_dict()
    if repo_type == "model":
        results = data.get("model-index", [{}])[0].get("results", []) if data.get("model-index") else []
        metrics = [m for r in results for m in r.get("metrics", [])]
        shown = ", ".join(f"{m.get('name', m.get('type'))} {m['value']:.1f}" for m in metrics[:2])
        return shown or (data.get("pipeline_tag") or "model")
    infos = data.get("dataset_info") or []
    infos = [infos] if isinstance(infos, dict) else infos
    parts = []
    for info in infos:
        rows = sum(s.get("num_examples", 0) for s in info.get("splits", []))
        parts.append(f"{info.get('config_name', 'default')} {rows}")
    return ", ".join(parts) + (" rows" if parts else "")


def collect(hub: Hub, results: Sequence[PushResult]) -> list[Artifact]:
    """One `Artifact` per repo pushed in the run (its last commit), with headline and lineage from its card."""
    by_repo: dict[tuple[str, str], list[PushResult]] = {}
    for result in results:
        by_repo.setdefault((result.repo_id, result.repo_type), []).append(result)
    artifacts = []
    for (repo_id, repo_type), pushes in by_repo.items():
        last = pushes[-1]
        card = hub.read_card(repo_id, last.commit, repo_type)
        lineage = lineage_of(card) or {}
        inputs = [
            f"{i['repo_id']}@{i['commit']}" for i in lineage.get("inputs", []) if "repo_id" in i and "commit" in i
        ]
        artifacts.append(
            Artifact(
                repo_id,
                repo_type,
                last.revision,
                last.commit,
                last.location,
                len(pushes),
                sum(p.created for p in pushes),
                headline(hub, repo_id, last.commit, repo_type),
                lineage.get("stage", ""),
                inputs,
            )
        )
    return artifacts


def table(artifacts: Sequence[Artifact]) -> str:
    from vital.runner import format_table

    header = ("repo", "type", "branch", "commit", "new commits", "stage", "holds")
    rows = [(a.repo_id, a.repo_type, a.revision, a.commit[:12], a.new_commits, a.stage, a.headline) for a in artifacts]
    return format_table(header, rows)


def mermaid(artifacts: Sequence[Artifact]) -> str:
    """The lineage as a Mermaid flowchart (renders on the Hub and on GitHub)."""
    ids = {a.node: f"n{i}" for i, a in enumerate(artifacts)}
    lines = ["flowchart LR"]
    for a in artifacts:
        lines.append(f'  {ids[a.node]}["{a.repo_id}<br/>{a.commit[:8]}<br/>{a.headline}"]')
    extra = {}
    for a in artifacts:
        for node in a.inputs:
            if node not in ids:  # an input from outside the run (or an earlier commit of a repo)
                ids[node] = extra[node] = f"x{len(extra)}"
                repo, commit = node.split("@")
                lines.append(f'  {ids[node]}(["{repo}<br/>{commit[:8]}"])')
            lines.append(f"  {ids[node]} --> {ids[a.node]}")
    return "\n".join(lines)


FONT_SIZE = 7.0
_CHAR_WIDTH = 0.61 * FONT_SIZE  # DejaVu Sans Mono's advance is 0.602 em
_LINE_HEIGHT = 1.25 * FONT_SIZE
_PAD = 8.0  # points between a label and its box
_GAP_X, _GAP_Y = 56.0, 18.0  # between columns (edges run here) and between rows
_HEADLINE_CHARS = 44


@dataclass
class LineageLayout:
    """A layered (Sugiyama-style) drawing of the lineage, in points: boxes in columns by depth, and every edge as a
    polyline that leaves its source's right side, crosses each intermediate column through a slot of its own (a
    "dummy" row no box occupies) and enters its target's left side, so no edge passes through a box."""

    boxes: dict[str, tuple[float, float, float, float]]  # node -> (x0, y0, x1, y1)
    labels: dict[str, str]
    external: set[str]
    edges: list[tuple[str, str, list[tuple[float, float]]]]  # (source, target, points)
    width: float
    height: float


def _label(a: Artifact) -> str:
    head = a.headline if len(a.headline) <= _HEADLINE_CHARS else a.headline[: _HEADLINE_CHARS - 1] + "…"
    return f"{a.repo_id}\n{a.commit[:8]}" + (f"\n{head}" if head else "")


def layout(artifacts: Sequence[Artifact]) -> LineageLayout:
    """Place the lineage graph: longest-path layers, long edges split by dummy slots, rows ordered by barycentre
    sweeps (fewer crossings), boxes sized to their labels."""
    nodes = {a.node: a for a in artifacts}
    labels = {a.node: _label(a) for a in artifacts}
    for a in artifacts:
        for node in a.inputs:
            if node not in labels:
                repo, commit = node.split("@")
                labels[node] = f"{repo}\n{commit[:8]}\n(earlier commit)"
    edges = [(u, a.node) for a in artifacts for u in dict.fromkeys(a.inputs) if u != a.node]
    depth: dict[str, int] = {}

    def level(node: str, seen=()) -> int:
        if node not in depth:
            parents = [p for p in (nodes[node].inputs if node in nodes else []) if p not in seen and p != node]
            depth[node] = 1 + max((level(p, (*seen, node)) for p in parents), default=-1)
        return depth[node]

    for node in labels:
        level(node)
    # Columns hold real nodes and one dummy per layer an edge skips; an edge against the layering (a cycle) is
    # dropped from the picture rather than drawn through boxes.
    columns: dict[int, list[str]] = {d: [] for d in range(max(depth.values(), default=0) + 1)}
    for node in sorted(labels):
        columns[depth[node]].append(node)
    chains: list[tuple[str, str, list[str]]] = []
    for u, v in edges:
        if depth[v] <= depth[u]:
            continue
        dummies = [f"\0{u}->{v}#{d}" for d in range(depth[u] + 1, depth[v])]
        for d, dummy in zip(range(depth[u] + 1, depth[v]), dummies):
            columns[d].append(dummy)
        chains.append((u, v, dummies))
    neighbours: dict[str, list[str]] = {}
    for u, v, dummies in chains:
        path = [u, *dummies, v]
        for a, b in zip(path, path[1:]):
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
    order = {n: i for col in columns.values() for i, n in enumerate(col)}
    for sweep in range(8):  # barycentre heuristic, alternating left-to-right and right-to-left
        layers = sorted(columns) if sweep % 2 == 0 else sorted(columns, reverse=True)
        for d in layers[1:]:
            side = d - 1 if sweep % 2 == 0 else d + 1

            def barycentre(n: str, side: int = side) -> float:
                near = [order[m] for m in neighbours.get(n, []) if depth_of(m) == side]
                return sum(near) / len(near) if near else order[n]

            def depth_of(m: str) -> int:
                return depth[m] if m in depth else int(m.rsplit("#", 1)[1])

            columns[d].sort(key=lambda n: (barycentre(n), order[n]))
            order.update({n: i for i, n in enumerate(columns[d])})

    box_w = max(max(len(line) for line in text.split("\n")) for text in labels.values()) * _CHAR_WIDTH + 2 * _PAD
    box_h = max(text.count("\n") + 1 for text in labels.values()) * _LINE_HEIGHT + 2 * _PAD
    row = box_h + _GAP_Y
    rows = max(len(c) for c in columns.values())
    height = rows * row + _GAP_Y
    width = len(columns) * (box_w + _GAP_X) + _GAP_X
    centre: dict[str, tuple[float, float]] = {}
    for d, col in columns.items():
        x = _GAP_X + d * (box_w + _GAP_X) + box_w / 2
        top = height - _GAP_Y - (rows - len(col)) * row / 2
        for i, n in enumerate(col):
            centre[n] = (x, top - i * row - box_h / 2)
    boxes = {
        n: (x - box_w / 2, y - box_h / 2, x + box_w / 2, y + box_h / 2) for n, (x, y) in centre.items() if n in labels
    }
    drawn = []
    for u, v, dummies in chains:
        points = [(boxes[u][2], centre[u][1])]
        for dummy in dummies:
            x, y = centre[dummy]
            points += [(x - box_w / 2, y), (x + box_w / 2, y)]
        points.append((boxes[v][0], centre[v][1]))
        drawn.append((u, v, points))
    return LineageLayout(boxes, labels, set(labels) - set(nodes), drawn, width, height)


def figure(artifacts: Sequence[Artifact]):
    """The lineage picture as a matplotlib ``Figure`` (data units are points). Boxes, labels and edges carry ``gid``
    ``box:<node>``, ``label:<node>`` and ``edge:<source>-><target>``."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, Rectangle

    plan = layout(artifacts)
    title = 24.0
    fig = Figure(figsize=(plan.width / 72, (plan.height + title) / 72))
    ax = fig.add_axes((0, 0, 1, plan.height / (plan.height + title)))
    ax.set_xlim(0, plan.width)
    ax.set_ylim(0, plan.height)
    ax.axis("off")
    for node, (x0, y0, x1, y1) in plan.boxes.items():
        external = node in plan.external
        ax.add_patch(
            Rectangle(
                (x0, y0), x1 - x0, y1 - y0, gid=f"box:{node}", linewidth=1,
                facecolor="#f3f3f3" if external else "#dbe9f6", edgecolor="#888" if external else "#2b6cb0",
            )
        )  # fmt: skip
        ax.text(
            (x0 + x1) / 2, (y0 + y1) / 2, plan.labels[node], gid=f"label:{node}", ha="center", va="center",
            fontsize=FONT_SIZE, family="DejaVu Sans Mono", linespacing=1.25,
        )  # fmt: skip
    for u, v, points in plan.edges:
        xs, ys = zip(*points)
        ax.plot(xs[:-1], ys[:-1], color="#555", linewidth=0.8, gid=f"edge:{u}->{v}")
        ax.add_patch(
            FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=8, color="#555", linewidth=0.8,
                            shrinkA=0, shrinkB=0, gid=f"arrow:{u}->{v}")
        )  # fmt: skip
    fig.suptitle(
        "Lineage: every artifact and the commits it was made from", fontsize=10, y=1 - 6 / (plan.height + title)
    )
    return fig


def draw(artifacts: Sequence[Artifact], path: str | Path) -> Path:
    """:func:`figure` saved as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure(artifacts).savefig(path, dpi=150)
    return path


def write_report(artifacts: Sequence[Artifact], out_dir: str | Path) -> dict[str, Path]:
    """``artifacts.json``, ``lineage.md`` (table + Mermaid) and ``lineage.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "artifacts.json").write_text(json.dumps([a.__dict__ for a in artifacts], indent=2))
    (out / "lineage.md").write_text(
        f"# Pipeline artifacts\n\n```\n{table(artifacts)}\n```\n\n```mermaid\n{mermaid(artifacts)}\n```\n"
    )
    return {
        "json": out / "artifacts.json",
        "markdown": out / "lineage.md",
        "picture": draw(artifacts, out / "lineage.png"),
    }
