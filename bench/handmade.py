"""Hand-made networks against the champion: does the search beat what a person would have picked?

Reads a finished pipeline checkout (``--project``): the champion (outputs/search_model/chosen.json),
its retrain (outputs/retrain/metrics.json: test accuracy, training minutes, epochs, TTA), the recipe
the retrain used (outputs/search_recipe/recipe.json when present, else params.yaml's
retrain.recipe), the Pareto front (outputs/search_model/pareto.json) and the found policy
(outputs/search_policy/policy.json, used when retrain.augment is ``policy``, as the retrain stage
does). Then trains, on every training image of ``--data``, with that recipe and that policy:

- the hand-made networks: airbench94 (``BASELINES``, ~2 M parameters: shown beside, usually
  outside the champion's budget) and the space points airbench_like, airbench_small, resnet20 and
  mobilenetv2 (``SPACE_POINTS``);
- the largest front member under 100 k and under 300 k parameters (when there is one; the
  champion's own configuration and networks already listed are not trained twice);
- with ``--retrain-champion``, the champion itself, with this code, so the comparison is same-run.

Each for the same training minutes as the champion's retrain: a network's training step is measured
(``pipeline.train.step_seconds`` at the recipe's batch size) and it trains
``max(1, floor(minutes * 60 / (step * ceil(train images / batch size))))`` epochs; the minutes it
actually took are reported beside. The minutes matched are metrics.json's ``train_minutes`` (from a
retrain that fine-tuned the @champion, scaled to the recipe's epochs), or with
``--retrain-champion`` the median minutes of the champion's re-train here. Test accuracy is the
recipe's TTA, scored as the retrain scores (``pipeline.evaluation.score``); with several
``--seeds``, each network's figures are the medians over the seeds.

``met``: no hand-made network within the champion's parameter budget (model_search.max_params)
beats the champion's test accuracy (metrics.json's, or the re-trained median with
``--retrain-champion``). A hand-made network whose configuration is the champion's (the champion is
a seed point) is listed but not counted. The RESULT line also names the smallest front member
within 1 point of MobileNetV2's validation accuracy in pareto.json (the search's own scores).

A full table is hours of training (each row takes the champion's retrain minutes), more than one
session or one project's lifetime. With ``--out``, the first run keeps a plan there (everything it
read from the project, and the machine) and each training as it finishes; a later run reads the plan
alone (no ``--project``), skips what is done, and prints the table of every row in the file so far.
``--only`` then picks which rows to add this time. The plan fixes ``--retrain-champion`` (a
resume asking otherwise is refused: its rows would match other minutes) and the seeds every row
trains. A resume may ask more ``--seeds`` of its ``--only`` rows (a gap under half a point wants
three), unless the champion is re-trained (its median minutes are then every row's budget): a later
seed trains the epochs of the row's first, and a row's figures are the medians of the seeds it has.
On a machine other than the plan's (sessions change CPUs), the champion's minutes there are not
known: its retrain is predicted instead, its step measured as every row's is, so each new row trains
``epochs x champion step / its step`` epochs, and its table note names the machine
(``--retrain-champion`` is then refused: re-train into a new --out).

    python -m bench.handmade --data /path/to/cifar10-jpg.tar.gz --project /path/to/finished/checkout --seeds 0 1 2
    python -m bench.handmade --data /path/to/cifar10-jpg.tar.gz --project /path/to/finished/checkout \\
        --out bench/results/handmade.json --only airbench94          # later: the same without --project
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.common import base_parser, machine, median, read_out, result_line, write_out
from pipeline.augment import Policy
from pipeline.config import TrainConfig, load_params
from pipeline.contracts import Chosen, Config, Pareto, RetrainMetrics, ScoredModel
from pipeline.data import ImageSet, load_data
from pipeline.device import pick_device
from pipeline.evaluation import score, tta_name
from pipeline.models import SPACE_POINTS, build_model, count_macs, count_params, normalise_config
from pipeline.stages.common import read_policy
from pipeline.stages.retrain import with_found_recipe
from pipeline.train import TrainingDivergedError, batch_seconds, step_seconds, train

HANDMADE = ("airbench94", "airbench_like", "airbench_small", "resnet20", "mobilenetv2")
FRONT_LIMITS = (100_000, 300_000)  # the largest front member under each
WITHIN_POINTS = 1.0  # "as good as MobileNetV2": validation accuracy within this many points
QUICK_TRAIN, QUICK_TEST = 2048, 1000
QUICK_STEP_BATCH = 16  # --quick measures the step at this batch (the code path, not the figure)


# ------------------------------------------------------------------ the finished project


@dataclass(frozen=True)
class Champion:
    """What the finished project says about its champion, and how it was trained."""

    chosen: Chosen
    metrics: RetrainMetrics
    recipe: TrainConfig
    recipe_source: str
    policy: Policy | None
    pareto: Pareto
    max_params: int | None  # model_search.max_params (None: no parameter budget)
    seed_point: str | None  # the SPACE_POINTS name the champion's configuration equals
    retrain_seed: int  # retrain.seed: the seed metrics.json's retrain ran at

    @property
    def epochs(self) -> int:
        """The epochs of a retrain from scratch: metrics.json's, or the recipe's when the retrain
        fine-tuned the @champion for fewer (or did not say)."""
        m = self.metrics
        return self.recipe.epochs if m.warm_start_from_version is not None or not m.epochs else m.epochs

    @property
    def minutes(self) -> float | None:
        """The retrain's training minutes from scratch: metrics.json's, scaled to ``epochs`` when
        the retrain fine-tuned the @champion for fewer (None: not recorded)."""
        m = self.metrics
        if m.train_minutes is None:
            return None
        if m.warm_start_from_version is not None and m.epochs:
            return m.train_minutes * self.epochs / m.epochs
        return m.train_minutes


def config_key(config: Config) -> str:
    """One string per network: a space point's name and its configuration give the same key (as
    do ``BASELINES["airbench94"]`` and ``SPACE_POINTS["airbench94"]``, the same network)."""
    if isinstance(config, str):
        if config not in SPACE_POINTS:
            return f"baseline:{config}"
        config = SPACE_POINTS[config]
    return json.dumps(normalise_config(config), sort_keys=True)


def seed_point_of(config: Config) -> str | None:
    """The SPACE_POINTS name whose configuration ``config`` is (normalised), or None."""
    key = config_key(config)
    return next((name for name, point in SPACE_POINTS.items() if config_key(point) == key), None)


def read_champion(project: Path) -> Champion:
    """The champion of the finished checkout at ``project`` (one DataError line when a file is
    missing or malformed)."""
    params = load_params(project / "params.yaml")
    chosen = Chosen.read(project / "outputs/search_model/chosen.json")
    metrics = RetrainMetrics.read(project / "outputs/retrain/metrics.json")
    pareto = Pareto.read(project / "outputs/search_model/pareto.json")
    recipe_path = project / "outputs/search_recipe/recipe.json"
    if recipe_path.is_file():  # the retrain stage's own check: found for the chosen architecture
        found = with_found_recipe(params, recipe_path, chosen, project / "outputs/search_model/chosen.json")
        recipe, source = found.retrain.recipe, "outputs/search_recipe/recipe.json"
    else:
        recipe, source = params.retrain.recipe, "params.yaml retrain.recipe"
    policy = (read_policy(project / "outputs/search_policy/policy.json")
              if params.retrain.augment == "policy" else None)
    return Champion(chosen=chosen, metrics=metrics, recipe=recipe, recipe_source=source, policy=policy,
                    pareto=pareto, max_params=params.model_search.max_params,
                    seed_point=seed_point_of(chosen.config), retrain_seed=params.retrain.seed)


PLAN_FORMAT = 1  # bumped when the plan's fields change meaning
PREDICTED = "the champion's retrain predicted here"  # a row's matched_to away from the plan's machine


def champion_plan(champion: Champion) -> dict[str, Any]:
    """The champion as ``--out``'s plan keeps it: everything the bench reads from the project."""
    return {"chosen": champion.chosen.to_json(), "metrics": champion.metrics.to_json(),
            "recipe": champion.recipe.model_dump(mode="json"), "recipe_source": champion.recipe_source,
            "policy": champion.policy.to_dict() if champion.policy is not None else None,
            "pareto": champion.pareto.to_json(), "max_params": champion.max_params,
            "retrain_seed": champion.retrain_seed}


def champion_from_plan(plan: dict[str, Any]) -> Champion:
    """The champion ``champion_plan`` kept (no project needed)."""
    chosen = Chosen.model_validate(plan["chosen"])
    return Champion(chosen=chosen, metrics=RetrainMetrics.model_validate(plan["metrics"]),
                    recipe=TrainConfig.model_validate(plan["recipe"]), recipe_source=plan["recipe_source"],
                    policy=Policy.from_dict(plan["policy"]) if plan["policy"] is not None else None,
                    pareto=Pareto.model_validate(plan["pareto"]), max_params=plan["max_params"],
                    seed_point=seed_point_of(chosen.config), retrain_seed=plan["retrain_seed"])


# ------------------------------------------------------------------ which networks


@dataclass
class Network:
    key: str  # a token for the RESULT line
    label: str  # the table's name
    architecture: Config
    role: str  # "champion" | "hand-made" | "front"
    notes: list[str] = field(default_factory=list)


def front_picks(pareto: Pareto, limits: tuple[int, ...] = FRONT_LIMITS) -> list[tuple[int, ScoredModel]]:
    """(limit, the largest front member with fewer parameters than it), for each limit that has one."""
    picks = []
    for limit in limits:
        under = [m for m in pareto.front if m.params < limit]
        if under:
            picks.append((limit, max(under, key=lambda m: (m.params, m.accuracy))))
    return picks


def smallest_within_reference(pareto: Pareto, reference: str = "mobilenetv2",
                              points: float = WITHIN_POINTS) -> ScoredModel | None:
    """The front member with the fewest parameters whose validation accuracy is within ``points``
    of the reference's (both as the search scored them); None without the reference or such a
    member."""
    ref = pareto.references.get(reference)
    if ref is None:
        return None
    near = [m for m in pareto.front if m.accuracy >= ref.accuracy - points / 100]
    return min(near, key=lambda m: (m.params, -m.accuracy)) if near else None


def _front_label(member: ScoredModel) -> str:
    return f"trial {member.trial}" if member.trial is not None else (member.seed_point or "front member")


def networks(champion: Champion, retrain_champion: bool) -> list[Network]:
    """What this bench trains, in table order; one network per configuration."""
    listed: dict[str, Network] = {}
    champion_key = config_key(champion.chosen.config)
    if retrain_champion:
        listed[champion_key] = Network("champion_retrained", "champion (re-trained here)", champion.chosen.config,
                                       "champion")
    for name in HANDMADE:
        architecture: Config = name if name == "airbench94" else SPACE_POINTS[name]
        net = Network(name, name, architecture, "hand-made")
        if config_key(architecture) == champion_key:
            net.notes.append("the champion's configuration: not counted against it")
        key = config_key(architecture)
        if key in listed:  # the champion re-trained here is this network
            listed[key].notes.append(f"= {name}")
            continue
        listed[key] = net
    for limit, member in front_picks(champion.pareto):
        what = f"the front's largest under {limit // 1000} k (val {member.accuracy:.4f})"
        key = config_key(member.config)
        if key == champion_key and not retrain_champion:
            continue  # the champion's row already stands for it
        if key in listed:
            if what not in listed[key].notes:
                listed[key].notes.append(f"{_front_label(member)}: {what}")
            continue
        label = _front_label(member)
        listed[key] = Network(label.replace(" ", ""), label, member.config, "front", [what])
    return list(listed.values())


# ------------------------------------------------------------------ training


@dataclass
class Row:
    network: Network
    params: int
    macs: int
    epochs: int
    step_s: float | None
    minutes: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    machines: list[str] = field(default_factory=list)  # where each seed trained (bench.common.machine)
    matched_to: list[str] = field(default_factory=list)  # each seed's budget (PREDICTED: away from the plan)
    failures: list[str] = field(default_factory=list)  # seeds whose training diverged or collapsed: the error

    @property
    def accuracy(self) -> float:
        return median(self.accuracies)

    @property
    def minutes_median(self) -> float:
        return median(self.minutes)


def matched_epochs(minutes: float, step: float, train_images: int, batch_size: int) -> int:
    """Epochs of ``step``-second steps that fit ``minutes`` (at least one)."""
    return max(1, math.floor(minutes * 60 / (step * math.ceil(train_images / batch_size))))


def train_once(architecture: Config, train_set: ImageSet, test_set: ImageSet, cfg: TrainConfig,
               policy: Policy | None, seed: int, device: torch.device) -> tuple[float, float, str | None]:
    """(training minutes, test accuracy at the recipe's TTA, None) of one fresh network, as the
    retrain stage trains and scores it. A training that diverges or collapses to chance
    (``TrainingDivergedError``) ends there and is scored as it is, with the error in place of
    None: the row's result at this recipe (the retrain stage would start again at half the lr)."""
    model = build_model(architecture, num_classes=len(train_set.classes), seed=seed)
    start, failure = time.perf_counter(), None
    try:
        minutes = train(model, train_set, cfg, augment=policy, device=device, seed=seed,
                        progress=False).train_seconds / 60
    except TrainingDivergedError as exc:
        minutes, failure = (time.perf_counter() - start) / 60, str(exc)
        print(f"  {exc}", flush=True)
    return minutes, score(model, test_set, cfg, device).accuracy, failure


def row_key(net: Network, seed: int, train_images: int, minutes: float | None, quick: bool) -> str:
    """One training in ``--out``: the network, seed, data and its budget: the champion's minutes
    (``matched``, on whichever machine), ``minutes`` given with --minutes, or the recipe's epochs."""
    budget = "quick" if quick else "recipe" if net.role == "champion" else "matched" if minutes is None \
        else f"{minutes:g}min"
    return f"{net.key}:{seed}:{train_images}:{budget}"


def row_seeds(net: Network, done: dict[str, Any], wanted: list[int], train_images: int, minutes: float | None,
              quick: bool) -> list[int]:
    """The seeds ``net``'s row shows: ``wanted`` and every other seed of it already in ``done`` at the
    same data and budget (a resume's extra ``--seeds`` of some rows)."""
    name, _, *budget = row_key(net, 0, train_images, minutes, quick).split(":")
    trained = {int(key.split(":")[1]) for key in done
               if key.split(":")[0] == name and key.split(":")[2:] == budget}
    return sorted(set(wanted) | trained)


def step_of(model: torch.nn.Module, champion: Champion, train_set: ImageSet, device: torch.device,
            quick: bool) -> float:
    """Seconds of one retrain step of ``model`` here: the SGD step at the recipe's batch size
    plus the batch's flip, crop and policy (the same for every network, but a share of the step that
    grows as the network shrinks)."""
    num_classes = len(train_set.classes)
    recipe = champion.recipe
    timed = recipe.model_copy(update={"batch_size": QUICK_STEP_BATCH}) if quick else recipe
    quick_timing = {"steps": 1, "warmup": 0} if quick else {}
    return (step_seconds(model, timed, num_classes=num_classes, device=device, **quick_timing)
            + batch_seconds(train_set, timed, augment=champion.policy, device=device, **quick_timing))


def champion_minutes_here(champion: Champion, train_set: ImageSet, device: torch.device, quick: bool) -> float:
    """The champion's retrain minutes predicted on this machine, measured as every row's step is: on
    a machine other than the plan's, the rows are matched to these (so each trains
    ``epochs x champion step / its step`` epochs, the same share of this machine as the champion's
    retrain would have taken)."""
    probe = build_model(champion.chosen.config, num_classes=len(train_set.classes))
    step = step_of(probe, champion, train_set, device, quick)
    return step * math.ceil(len(train_set) / champion.recipe.batch_size) * champion.epochs / 60


def run_network(net: Network, champion: Champion, train_set: ImageSet, test_set: ImageSet, seeds: list[int],
                budget_minutes: float | None, device: torch.device, quick: bool, *,
                done: dict[str, Any] | None = None, save: Callable[[], None] = lambda: None,
                key_minutes: float | None = None, where: str = "", matched_to: str = "") -> Row:
    """``net`` trained at each seed for ``budget_minutes``; a seed already in ``done`` (``--out``'s
    rows, keyed by ``key_minutes``: None for the champion's minutes) is read, not trained, and each
    new one is added to it, with ``where`` it trained and what its minutes were ``matched_to``, and
    ``save``d as it finishes (a later seed trains the epochs of the first: matched to that seed)."""
    done = {} if done is None else done
    probe = build_model(net.architecture, num_classes=len(train_set.classes))
    recipe = champion.recipe
    keys = {seed: row_key(net, seed, len(train_set), key_minutes, quick) for seed in seeds}
    earlier = next((done[k] for k in keys.values() if k in done), None)
    step: float | None
    if earlier is not None:  # the seeds to come train for the epochs the first one did
        step, epochs = earlier["step_s"], int(earlier["epochs"])
        matched_to = str(earlier.get("matched_to", matched_to))
    elif net.role == "champion":  # the pipeline's own schedule: the minutes it takes are the budget
        step, epochs = None, 1 if quick else recipe.epochs
    else:
        step = step_of(probe, champion, train_set, device, quick)
        if quick or budget_minutes is None:
            epochs = 1
        else:
            epochs = matched_epochs(budget_minutes, step, len(train_set), recipe.batch_size)
    row = Row(net, count_params(probe), count_macs(probe), epochs, step)
    cfg = recipe.model_copy(update={"epochs": epochs})
    step_text = f", step {step:.3f} s" if step is not None else ""
    for seed in seeds:
        key = keys[seed]
        source = "from --out"
        if key not in done:
            minutes, accuracy, failure = train_once(net.architecture, train_set, test_set, cfg, champion.policy,
                                                    seed, device)
            done[key] = {"epochs": epochs, "step_s": step, "minutes": minutes, "test_accuracy": accuracy,
                         "minutes_matched": budget_minutes, "matched_to": matched_to, "machine": where}
            if failure is not None:
                done[key]["failed"] = failure
            save()
            source = "trained"
        row.minutes.append(float(done[key]["minutes"]))
        row.accuracies.append(float(done[key]["test_accuracy"]))
        row.machines.append(str(done[key].get("machine", "")))
        row.matched_to.append(str(done[key].get("matched_to", "")))
        if "failed" in done[key]:
            row.failures.append(f"seed {seed}: {done[key]['failed']}")
        print(f"  {net.label} seed {seed} ({source}): {epochs} epochs{step_text}, {row.minutes[-1]:.2f} min, "
              f"test accuracy {row.accuracies[-1]:.4f}", flush=True)
    return row


# ------------------------------------------------------------------ report


def within(params: int, budget: int | None) -> bool:
    return budget is None or params <= budget


def table(champion: Champion, rows: list[Row], tta: str, home: str = "") -> str:
    """The markdown table; a row trained away from ``home`` (the plan's machine) says where."""
    budget = f"{champion.max_params:,}" if champion.max_params is not None else "none"
    lines = [f"| network | params | MACs | epochs | minutes | test accuracy ({tta} TTA) | within the champion's "
             f"budget ({budget} params) | note |", "|---|---|---|---|---|---|---|---|"]
    m, chosen = champion.metrics, champion.chosen
    params = m.params if m.params is not None else chosen.params
    macs = m.macs if m.macs is not None else chosen.macs
    notes = ["the pipeline's retrain, from outputs/retrain/metrics.json (not re-trained here)"]
    if champion.seed_point:
        notes.append(f"seed point {champion.seed_point}")
    if m.warm_start_from_version is not None:
        notes.append(f"fine-tuned from @champion v{m.warm_start_from_version}: minutes matched scaled to "
                     f"{champion.recipe.epochs} epochs")
    if m.tta is not None and m.tta != tta:
        notes.append(f"scored with {m.tta} TTA")
    label = "champion" + (f" (trial {chosen.trial})" if chosen.trial is not None else "")
    lines.append(f"| {label} | {_num(params)} | {_num(macs)} | {_num(m.epochs)} | "
                 f"{_fmt(m.train_minutes, '.2f')} | {m.test_accuracy:.4f} | "
                 f"{_yes(params is None or within(params, champion.max_params))} | {'; '.join(notes)} |")
    for row in rows:
        net = row.network
        notes = list(net.notes)
        if net.role == "champion" and champion.seed_point:
            notes.insert(0, f"seed point {champion.seed_point}")
        if len(row.accuracies) > 1:
            notes.append(f"median of {len(row.accuracies)} seeds ({min(row.accuracies):.4f}-"
                         f"{max(row.accuracies):.4f})")
        notes.extend(f"stopped, {failure} (scored as it was; the retrain stage would start again at half "
                     "the lr)" for failure in row.failures)
        away = sorted({m for m in row.machines if m and home and m != home})
        if away:
            notes.append(f"trained on {', '.join(away)}, not the champion's machine"
                         + (": matched to the champion's retrain predicted there" if PREDICTED in row.matched_to
                            else ""))
        lines.append(f"| {net.label} | {row.params:,} | {row.macs:,} | {row.epochs} | {row.minutes_median:.2f} | "
                     f"{row.accuracy:.4f} | {_yes(within(row.params, champion.max_params))} | "
                     f"{'; '.join(notes)} |")
    return "\n".join(lines)


def _num(value: int | None) -> str:
    return f"{value:,}" if value is not None else "?"


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "?"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def summary(champion: Champion, rows: list[Row], *, quick: bool, seeds: list[int], train_images: int,
            budget_minutes: float | None, tta: str) -> str:
    """The RESULT line."""
    retrained = next((r for r in rows if r.network.role == "champion"), None)
    champion_acc = retrained.accuracy if retrained is not None else champion.metrics.test_accuracy
    champion_key = config_key(champion.chosen.config)
    rivals = [r for r in rows if r.network.role == "hand-made" and within(r.params, champion.max_params)
              and config_key(r.network.architecture) != champion_key]
    best = max(rivals, key=lambda r: r.accuracy, default=None)
    near = smallest_within_reference(champion.pareto)
    reference = champion.pareto.references.get("mobilenetv2")
    params = champion.metrics.params if champion.metrics.params is not None else champion.chosen.params
    return result_line(
        bench="handmade", quick=quick, seeds=len(seeds), train_images=train_images,
        champion_acc=round(champion_acc, 4), champion_source="retrained" if retrained else "metrics.json",
        champion_params=params, champion_seed_point=champion.seed_point or "none",
        champion_minutes=round(budget_minutes, 2) if budget_minutes is not None else "none",
        budget_params=champion.max_params if champion.max_params is not None else "none",
        best_handmade=best.network.key if best else "none",
        best_handmade_acc=round(best.accuracy, 4) if best else "none",
        best_handmade_params=best.params if best else "none",
        met=best is None or best.accuracy <= champion_acc,
        mobilenetv2_val_acc=round(reference.accuracy, 4) if reference else "none",
        smallest_within_mobilenetv2=_front_label(near).replace(" ", "") if near else "none",
        smallest_within_mobilenetv2_params=near.params if near else "none",
        recipe=champion.recipe_source.split()[0].rsplit("/", 1)[-1], tta=tta, machine=machine(),
    )


# ------------------------------------------------------------------ main


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path,
                        help="a finished pipeline checkout (its outputs/ and params.yaml); not needed when --out "
                             "holds the plan")
    parser.add_argument("--out", type=Path,
                        help="JSON of the plan (the champion as the project describes it, the machine) and the rows "
                             "trained so far: read to resume, written after each training")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="training seeds of every row (default 0; a resume: the plan's)")
    parser.add_argument("--retrain-champion", action="store_true",
                        help="also re-train the champion with this code (same run); its minutes are then the "
                             "budget and its median accuracy the one compared")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="train only these rows (their keys: airbench94, airbench_like, airbench_small, resnet20, "
                             "mobilenetv2, front_*): a partial run, said in the RESULT line")
    parser.add_argument("--minutes", type=float, metavar="M",
                        help="train the hand-made rows for M minutes each instead of the champion's training "
                             "minutes (e.g. model_search.max_retrain_minutes: what a network could have had); "
                             "said in the RESULT line")
    args = parser.parse_args()
    if args.minutes is not None and args.minutes <= 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")

    out = read_out(args.out, PLAN_FORMAT, "handmade")
    here = machine()
    if "plan" in out:
        plan = out["plan"]
        if args.retrain_champion != plan["retrain_champion"]:  # the rows' minutes would differ
            parser.error(f"--retrain-champion: {args.out}'s rows were matched to the champion "
                         f"{'re-trained' if plan['retrain_champion'] else 'of metrics.json'}; "
                         f"{'pass' if plan['retrain_champion'] else 'leave out'} --retrain-champion, "
                         "or give another --out")
        if args.seeds is not None and args.seeds != plan["seeds"] and (plan["retrain_champion"] or not args.only):
            parser.error(f"--seeds {args.seeds}: {args.out}'s plan trains seeds {plan['seeds']}"
                         + ("; its champion is re-trained, so the seeds set every row's minutes"
                            if plan["retrain_champion"] else "; more seeds of some rows: name them with --only")
                         + "; or give another --out")
        if plan["machine"] != here and args.retrain_champion:
            parser.error(f"--retrain-champion: {args.out}'s plan was made on {plan['machine']}, this machine is "
                         f"{here}; re-train the champion into another --out")
        extra_seeds = args.seeds or []
        champion = champion_from_plan(plan["champion"])
        if args.project is not None and champion_plan(read_champion(args.project)) != plan["champion"]:
            parser.error(f"--project: its champion is not the one {args.out}'s plan holds; give another --out")
        print(f"the plan in {args.out}: {plan['project']}", flush=True)
    else:
        if args.project is None:
            parser.error(f"--project: needed to make the plan ({args.out or '--out'} holds none)")
        champion = read_champion(args.project)
        plan = {"format": PLAN_FORMAT, "bench": "handmade", "machine": here, "project": str(args.project),
                "seeds": args.seeds or [0], "retrain_champion": args.retrain_champion,
                "champion": champion_plan(champion)}
        out = {"plan": plan, "rows": {}}
        extra_seeds = []
    done: dict[str, Any] = out.setdefault("rows", {})

    def save() -> None:
        write_out(args.out, out)

    splits = load_data(args.data)
    train_set, test_set = splits["train"], splits["test"]
    seeds = list(plan["seeds"])
    if args.quick:  # smoke run: a slice of the data, one epoch, one seed, no minutes matching
        pick = torch.Generator().manual_seed(0)  # the splits are ordered by class: draw at random
        train_set = train_set.subset(torch.randperm(len(train_set), generator=pick)[:QUICK_TRAIN])
        test_set = test_set.subset(torch.randperm(len(test_set), generator=pick)[:QUICK_TEST])
        seeds = seeds[:1]  # (a resume's extra --seeds are trained as asked)
    device = pick_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tta = tta_name(champion.recipe)
    chosen = champion.chosen
    print(f"champion trial={chosen.trial} params={chosen.params} "
          f"seed_point={champion.seed_point} test_accuracy={champion.metrics.test_accuracy:.4f} "
          f"train_minutes={champion.metrics.train_minutes} epochs={champion.metrics.epochs}", flush=True)
    print(f"recipe ({champion.recipe_source}): {champion.recipe.model_dump()}", flush=True)
    print(f"policy: {'outputs/search_policy/policy.json' if champion.policy else 'none (flip/crop only)'}; "
          f"budget: {champion.max_params} params; train={len(train_set)} test={len(test_set)} "
          f"device={device.type} seeds={seeds}", flush=True)

    listed = networks(champion, args.retrain_champion)
    if args.only:
        unknown = sorted(set(args.only) - {net.key for net in listed})
        if unknown:
            parser.error(f"--only: no such row {unknown}; rows: {[net.key for net in listed]}")
    save()  # the plan is kept before the first training starts
    rows: list[Row] = []
    budget_minutes = champion.minutes
    todo = list(listed)
    if todo and todo[0].role == "champion":
        rows.append(run_network(todo.pop(0), champion, train_set, test_set, seeds, None, device, args.quick,
                                done=done, save=save, where=here, matched_to="the pipeline's recipe"))
        budget_minutes = rows[0].minutes_median
    matched = args.minutes if args.minutes is not None else budget_minutes
    matched_to = "--minutes" if args.minutes is not None else "the champion's minutes"
    asked = [net for net in todo if not args.only or net.key in args.only]
    shown_seeds = {net.key: row_seeds(net, done, seeds + (extra_seeds if net in asked else []),
                                      len(train_set), args.minutes, args.quick) for net in todo}
    predicted = None
    if plan["machine"] != here and args.minutes is None and any(  # a new row (a later seed trains the first's epochs)
            all(row_key(net, seed, len(train_set), None, args.quick) not in done for seed in shown_seeds[net.key])
            for net in asked):
        # the champion's minutes were measured on the plan's machine: here, its step sets them
        matched = predicted = champion_minutes_here(champion, train_set, device, args.quick)
        matched_to = PREDICTED
    if matched is None and not args.quick:
        raise SystemExit("bench/handmade: outputs/retrain/metrics.json has no train_minutes to match; "
                         "pass --retrain-champion to measure them here, or --minutes")
    print(f"minutes matched: {matched if matched is not None else 'none'}"
          + (f" (--minutes; the champion trained {budget_minutes})" if args.minutes is not None else "")
          + (f" (the champion's retrain predicted on this machine, not the plan's {plan['machine']}: it trained "
             f"{budget_minutes} there)" if predicted is not None else "")
          + (" (--quick: 1 epoch each instead)" if args.quick else ""), flush=True)
    skipped = []
    for net in todo:
        if args.only and net.key not in args.only and not all(
                row_key(net, seed, len(train_set), args.minutes, args.quick) in done for seed in seeds):
            skipped.append(net.key)  # not asked for this time, and not all in --out from earlier runs
            continue
        rows.append(run_network(net, champion, train_set, test_set, shown_seeds[net.key], matched, device,
                                args.quick, done=done, save=save, key_minutes=args.minutes, where=here, matched_to=matched_to))
    print(table(champion, rows, tta, home=plan["machine"]))
    shown = [row.network.key for row in rows if row.network.role != "champion"]
    print(summary(champion, rows, quick=args.quick, seeds=seeds, train_images=len(train_set),
                  budget_minutes=budget_minutes, tta=tta)
          + (f" partial={','.join(shown) or 'none'}" if skipped else "")
          + (f" minutes_matched={args.minutes}" if args.minutes is not None else "")
          + (f" minutes_matched_here={predicted:.2f}" if predicted is not None else ""))


if __name__ == "__main__":
    main()
