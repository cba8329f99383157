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


def draw(artifacts: Sequence[Artifact], path: str | Path) -> Path:
    """A left-to-right picture of the lineage: one box per artifact, arrows from inputs, columns by depth."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    nodes = {a.node: a for a in artifacts}
    labels = {
        a.node: f"{a.repo_id}\n{a.commit[:8]}" + (f"\n{a.headline[:32]}" if a.headline else "") for a in artifacts
    }
    for a in artifacts:
        for node in a.inputs:
            if node not in labels:
                repo, commit = node.split("@")
                labels[node] = f"{repo}\n{commit[:8]}\n(earlier commit)"
    depth: dict[str, int] = {}

    def level(node: str, seen=()) -> int:
        if node not in depth:
            parents = [p for p in (nodes[node].inputs if node in nodes else []) if p not in seen]
            depth[node] = 1 + max((level(p, (*seen, node)) for p in parents), default=-1)
        return depth[node]

    for node in labels:
        level(node)
    columns: dict[int, list[str]] = {}
    for node in labels:
        columns.setdefault(depth[node], []).append(node)
    height = max(len(c) for c in columns.values())
    fig = Figure(figsize=(3.2 * len(columns), 1.3 * height + 0.6))
    ax = fig.add_subplot()
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-0.7, height - 0.3)
    ax.axis("off")
    where = {}
    for x, col in sorted(columns.items()):
        for y, node in enumerate(sorted(col)):
            yy = height - 1 - y - (height - len(col)) / 2
            where[node] = (x, yy)
            external = node not in nodes
            box = FancyBboxPatch(
                (x - 0.42, yy - 0.32), 0.84, 0.64, boxstyle="round,pad=0.02",
                facecolor="#f3f3f3" if external else "#dbe9f6", edgecolor="#888" if external else "#2b6cb0",
            )  # fmt: skip
            ax.add_patch(box)
            ax.text(x, yy, labels[node], ha="center", va="center", fontsize=7, family="monospace")
    for a in artifacts:
        for node in a.inputs:
            (x0, y0), (x1, y1) = where[node], where[a.node]
            ax.add_patch(
                FancyArrowPatch((x0 + 0.42, y0), (x1 - 0.42, y1), arrowstyle="-|>", mutation_scale=10, color="#555")
            )
    ax.set_title("Lineage: every artifact and the commits it was made from", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
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
