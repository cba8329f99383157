"""The evaluation stage's judge requests in one plan: the open-chat judge and the pairwise (win-rate) judge.

`plan_judges` keys every request (`vital.evaluation.chat_judge`, `vital.evaluation.win_rate`); `run_judges` sends the
ones no journal holds (unreadable replies asked again) through `vital.llm.jobs.run_jobs_sharded`; `judge_tables` turns
the replies into the eval dataset's ``chat`` and ``win_rate`` configs and their summary rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vital.evaluation.chat_judge import (
    CHAT_EVAL_FEATURES,
    CHAT_JUDGE_TASK,
    build_chat_judge_messages,
    chat_judge_rows,
    chat_retry_job,
    plan_chat_judge_jobs,
    relative_scores,
)
from vital.evaluation.judge_jobs import base_task
from vital.evaluation.win_rate import (
    WIN_EVAL_FEATURES,
    build_win_rate_job_messages,
    plan_win_rate_jobs,
    summarize_win_rate,
    verdict_retry_job,
    win_rate_rows,
)


@dataclass
class JudgePlan:
    """The judge requests of one evaluation and the settings that shaped them.

    Attributes:
        chat_items, chat_predictions: the open-chat questions (images undecoded) and the evaluated model's answers.
        win_items: the win-rate items (`vital.evaluation.win_rate.win_rate_items`).
        chat_jobs, win_jobs: the keyed first asks of each judge.
        judge: the judge model named in the keys.
        judge_with_image, win_with_image: whether each judge is shown the image.
        verdict_position: where the pairwise judge puts its verdict (``"last"`` or ``"first"``).
        retries: re-asks of an unreadable reply.
    """

    chat_items: list
    chat_predictions: dict
    win_items: list
    chat_jobs: list
    win_jobs: list
    judge: str
    judge_with_image: bool
    win_with_image: bool
    verdict_position: str
    retries: int

    @property
    def jobs(self) -> list:
        return self.chat_jobs + self.win_jobs

    def build(self, job) -> list[dict[str, Any]]:
        """The messages of ``job`` (a first ask or a re-ask of either judge)."""
        from vital.evaluation.answering import decode_image
        from vital.llm import image_to_data_url

        def image_url(cell, show: bool):
            return image_to_data_url(decode_image(cell)) if show else None

        if base_task(job.task) == CHAT_JUDGE_TASK:
            item = self.chat_items[job.index]
            url = image_url(item["image"], self.judge_with_image)
            return build_chat_judge_messages(
                item, self.chat_predictions[item["question_id"]], url, job.task != CHAT_JUDGE_TASK
            )
        item = self.win_items[job.index]
        url = image_url(item["image"], self.win_with_image)
        return build_win_rate_job_messages(item, job, url, self.verdict_position)

    def followup(self, job, result):
        """The re-ask of a reply that cannot be read, or None."""
        if base_task(job.task) == CHAT_JUDGE_TASK:
            return chat_retry_job(job, result, self.retries)
        return verdict_retry_job(job, result, self.retries, self.verdict_position)


def plan_judges(
    chat_items: Sequence[Mapping[str, Any]],
    chat_predictions: Mapping[str, str],
    win_items: Sequence[Mapping[str, Any]],
    judge: str,
    *,
    chat_judge: bool = True,
    judge_with_image: bool = False,
    win_rate_with_image: bool | None = None,
    verdict_position: str = "last",
    retries: int = 1,
) -> JudgePlan:
    """Plan both judges: the chat judge for every answered open-chat question (when ``chat_judge``), the pairwise
    judge for every win-rate item, in both orders. ``win_rate_with_image`` None follows ``judge_with_image``."""
    chat_jobs = plan_chat_judge_jobs(chat_items, chat_predictions, judge, judge_with_image) if chat_judge else []
    win_with_image = judge_with_image if win_rate_with_image is None else win_rate_with_image
    win_jobs = plan_win_rate_jobs(win_items, judge, win_with_image, verdict_position)
    return JudgePlan(
        list(chat_items),
        dict(chat_predictions),
        list(win_items),
        chat_jobs,
        win_jobs,
        judge,
        judge_with_image,
        win_with_image,
        verdict_position,
        retries,
    )


def run_judges(plan: JudgePlan, endpoint, journal_dir, shard: str | None = None, batch: Any = None):
    """Send the plan's requests no journal holds (this process's share), merge the journals; ``{}`` when there is
    nothing to judge, None on a process or shard that does not push."""
    if not plan.jobs:
        return {}
    from vital.llm.jobs import run_jobs_sharded

    return run_jobs_sharded(plan.jobs, endpoint, plan.build, journal_dir, shard, plan.followup, batch=batch)


def judge_tables(plan: JudgePlan, results: Mapping[str, Any], answer_errors: Mapping[str, str | None]) -> dict:
    """The judges' verdicts as eval configs: ``{"chat": rows, "win_rate": rows}`` (only the judges that ran) with
    ``chat_scores`` (relative scores) and ``win_summary`` (win, tie and loss rates), each None when not judged."""
    out: dict[str, Any] = {"configs": {}, "chat_scores": None, "win_summary": None}
    if plan.chat_jobs:
        rows = chat_judge_rows(
            plan.chat_items,
            plan.chat_predictions,
            plan.chat_jobs,
            results,
            plan.judge,
            plan.retries,
            plan.judge_with_image,
            dict(answer_errors),
        )
        out["chat_scores"] = relative_scores(rows)
        out["configs"]["chat"] = (rows, CHAT_EVAL_FEATURES)
    if plan.win_jobs:
        rows = win_rate_rows(
            plan.win_items,
            plan.win_jobs,
            results,
            plan.judge,
            plan.retries,
            plan.win_with_image,
            plan.verdict_position,
        )
        out["win_summary"] = summarize_win_rate(rows)
        out["configs"]["win_rate"] = (rows, WIN_EVAL_FEATURES)
    return out
