"""`autoaug history`: one line per data version, from what the pipeline recorded in MLflow.

Every stage run is tagged with the sample fingerprint (the data version), so the runs of one
data version line up across the stage experiments without any extra bookkeeping: the policy
search's score, the model search's Pareto size, the retrain's test accuracy and size of the
training set, and whether publish promoted it (with the promotion gate's paired comparison:
the accuracy difference in points, its 95 % interval and McNemar's p). The newest run of each stage per fingerprint
is the one shown (a re-run after a params change replaces the earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline import names
from pipeline.tracking import PARENT, Tracker

STAGES = ("search_policy", "search_model", "retrain", "publish")


@dataclass
class DataVersion:
    fingerprint: str
    started: float = 0.0  # ms since the epoch, of the first stage run
    runs: dict[str, Any] = field(default_factory=dict)  # stage -> newest top-level run

    def metric(self, stage: str, key: str) -> float | None:
        run = self.runs.get(stage)
        return run.data.metrics.get(key) if run is not None else None

    def tag(self, stage: str, key: str) -> str | None:
        run = self.runs.get(stage)
        return run.data.tags.get(key) if run is not None else None

    def architecture(self) -> str:
        """Which architecture the model search settled on: ``new``, the @champion's (``v3``), or the
        champion's kept over the rule's pick (``v3 kept``); ``-`` without a model search."""
        if self.runs.get("search_model") is None:
            return "-"
        version = self.metric("search_model", names.CHAMPION_ARCHITECTURE_VERSION)
        if version is None:
            return "new"
        return f"v{version:.0f}" + (" kept" if self.metric("search_model", names.KEPT_CHAMPION) else "")

    def versus_champion(self) -> str:
        """The publish gate's paired comparison: ``+0.42 [+0.21,+0.63] p=0.0003`` (accuracy points
        with their 95 % interval, McNemar's p); ``-`` when publish had no champion to compare with
        or no paired data."""
        diff = self.metric("publish", names.DIFFERENCE_POINTS)
        low, high = self.metric("publish", names.DIFFERENCE_LOW_POINTS), self.metric("publish", names.DIFFERENCE_HIGH_POINTS)
        p = self.metric("publish", names.P_VALUE)
        if diff is None or low is None or high is None or p is None:
            return "-"
        return f"{diff:+.2f} [{low:+.2f},{high:+.2f}] p={p:.2g}"

    def row(self) -> dict[str, str]:
        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        champion = self.tag("publish", names.CHAMPION)
        # study names end in <fingerprint>[-<part>]: the data version the policy search built on
        prior = self.tag("search_policy", names.WARM_START_FROM)
        warm_from = prior.split(",")[0].split("-")[2] if prior and prior.count("-") >= 2 else "-"
        return {
            "date": datetime.fromtimestamp(self.started / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
            "fingerprint": self.fingerprint,
            "train images": num(self.metric("retrain", names.TRAIN_IMAGES), ".0f"),
            "policy score": num(self.metric("search_policy", names.BEST_SCORE_MEAN), ".4f"),
            "warm trials": num(self.metric("search_policy", names.WARM_STARTED_TRIALS), ".0f"),
            "warm from": warm_from,
            "pareto": num(self.metric("search_model", names.PARETO_SIZE), ".0f"),
            "model": self.architecture(),
            "test acc": num(self.metric("retrain", names.TEST_ACCURACY), ".4f"),
            "vs champion": self.versus_champion(),
            "champion": {"True": "yes", "False": "no"}.get(champion or "", "-"),
            "runs": " ".join(f"{stage}={run.info.run_id[:8]}" for stage, run in self.runs.items()),
        }


def data_versions(tracker: Tracker) -> list[DataVersion]:
    """Every data version the tracking store knows, oldest first."""
    versions: dict[str, DataVersion] = {}
    for stage in STAGES:
        exp = tracker.client.get_experiment_by_name(f"{tracker.prefix}-{stage}")
        if exp is None:
            continue
        runs = tracker.client.search_runs([exp.experiment_id], max_results=5000,
                                          order_by=["attributes.start_time ASC"])
        for run in runs:
            fp = run.data.tags.get(names.FINGERPRINT)
            if not fp or PARENT in run.data.tags:
                continue
            version = versions.setdefault(fp, DataVersion(fp, started=run.info.start_time))
            version.started = min(version.started, run.info.start_time)
            version.runs[stage] = run  # ascending order: the newest wins
    return sorted(versions.values(), key=lambda v: v.started)


def format_table(rows: list[dict[str, str]]) -> str:
    """Columns padded to their widest cell; the last column (run ids) left ragged."""
    if not rows:
        return "no data versions recorded yet: run `dvc repro` first"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys[:-1]}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys[:-1]) + "  " + keys[-1]]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in keys[:-1]) + "  " + r[keys[-1]] for r in rows]
    return "\n".join(lines)
