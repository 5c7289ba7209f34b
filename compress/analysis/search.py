"""Search: tune several settings of a pipeline at once (say the L1 strength and the pruning
threshold) by Bayesian optimization, judging every trial on the validation split.

    spaces = search_spaces(
        config, ["train.l1.lambda=log(1e-5,1e-3)", "prune.threshold=(0.005,0.08)"]
    )
    result = run_search(
        "pipelines/mnist.toml", spaces, out_dir="runs/search", max_drop=0.5, trials=20
    )
    result["chosen"], result["frontier"], result["test_accuracy"]

Spaces (compress.analysis.space): `(low, high)` uniform, `log(low, high)` log-uniform,
`int(low, high)` integers, or a list of choices as a TOML array; parsed, never evaluated.
What a search writes is compress.analysis.search_report; search.json is typed in
compress.results (Search).

Objectives: `size` (default) looks for the smallest deploy size whose validation accuracy is
at most `max_drop` points below the reference (Optuna's TPE; a trial that misses the budget
is infeasible through TPE's constraints); `latency` looks, the same way, for the fastest
artifact within the budget (the smallest `latency_vs_dense`, each trial's artifacts timed
interleaved with its dense model by verify); `pareto` looks for the frontier of deploy size
against validation accuracy (NSGA-II). The reference is the dense model of the pipeline
as written, run once as `<out>/reference`, so that a stronger L1 penalty cannot lower the
bar by weakening its own dense model. A trial and the search choose by the budget rule of
sweep and tune (compress.analysis.pareto.best_within_budget). Test accuracy decides
nothing: it is read for the chosen artifacts at the end only.

The first trial is the pipeline's own settings when they lie in every space (a known point,
already made by the reference run). Every trial is a run folder `<out>/trial-NNNN/` sharing
the stage cache `<out>/cache` (compress.cache) with the others, so trials with the same
training settings train once; trials run through compress.analysis.runner (in this process,
in worker processes or as Ray tasks). The Optuna study lives in `<out>/study.journal`: a
rerun of the same command after Ctrl-C continues it (finished trials are kept, interrupted
ones are run again). A trial that fails is recorded as failed, and the search goes on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compress.analysis.pareto import (
    best_within_budget,
    device_misses,
    pareto_frontier,
    within_budget,
)
from compress.analysis.reference import REFERENCE, dense_val
from compress.analysis.runner import Runner, TaskSettings, available_cpus, import_ray
from compress.analysis.search_report import overrides_text, write_search
from compress.analysis.space import Space, file_settings, suggest
from compress.analysis.sweep import delta
from compress.budget import DEVICE_KEYS, Limits, split_limits, violation
from compress.config import load_pipeline
from compress.errors import CompressError
from compress.results import (
    DENSE,
    TEST,
    VAL,
    Search,
    SearchArtifact,
    SearchPoint,
    SearchTrial,
    accuracy_points,
)

log = logging.getLogger(__name__)

OBJECTIVES = ("size", "pareto", "latency")
# what a single-objective search minimizes among the artifacts within the budget
MEASURE = {"size": "deploy_bytes", "latency": "latency_vs_dense", "pareto": "deploy_bytes"}
STUDY_FILE = "study.journal"


# ---------------------------------------------------------------- one trial


def artifact_rows(
    report: dict, reference_val: float, where: str, limits: Limits | None = None
) -> list[SearchArtifact]:
    """The artifacts of one run with their validation accuracy and drop against the
    reference, their device figures and, with device `limits`, what they miss of them."""
    rows = []
    for a in report["artifacts"]:
        if a.get(VAL) is None:
            raise CompressError(
                f"{where}: artifact {a['name']} has no val_accuracy in report.json; "
                "search needs a compress that measures accuracy on the validation split"
            )
        rows.append(
            {
                "artifact": a["name"],
                VAL: a[VAL],
                "drop": round(-accuracy_points(reference_val, a[VAL]), 4),
                "deploy_bytes": a["deploy_bytes"],
                "sparsity": a["sparsity"],
                "latency_vs_dense": a.get("latency_vs_dense"),
                "status": a["status"],
                **{key: a.get(key) for key in DEVICE_KEYS},
            }
        )
        if limits is not None:
            rows[-1]["misses"] = device_misses(rows[-1], limits)
    return rows


def trial_score(
    rows: list[SearchArtifact],
    max_drop: float | None,
    objective: str = "size",
    limits: Limits | None = None,
) -> SearchArtifact | None:
    """The trial's representative artifact (other than dense), by the budget rule: the
    smallest (the fastest, for `latency`) within the budget and the device `limits` (with no
    budget, the smallest), else the closest to it; None when none was verified."""
    return best_within_budget(rows, max_drop, DENSE, limits, MEASURE[objective]).best


def constraint_of(best: dict, max_drop: float | None, limits: Limits | None) -> float:
    """<= 0 when `best` is feasible: its drop beyond `max_drop`, in points; when it misses
    the device `limits`, that (0 at least) plus how far it misses them (violation)."""
    beyond = best["drop"] - max_drop if max_drop is not None else 0.0
    off = violation(best, limits) if limits is not None else 0.0
    return beyond if off == 0.0 else max(beyond, 0.0) + off


# ---------------------------------------------------------------- the study


@dataclass(frozen=True)
class StudyOptions:
    """The sampler's seed, and the Optuna storage URL (None: `<out>/study.journal`)."""

    seed: int = 0
    storage: str | None = None


def open_storage(out: Path, url: str | None = None):
    """The Optuna storage of the study: `<out>/study.journal` by default; with --storage, a
    journal file (`journal:///path/study.log` or a plain path, on a folder every machine
    sees) or a database URL (`sqlite:///...`, `postgresql://...`, `mysql://...`), which
    several `compress search` processes started apart share."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None or url.startswith("journal://") or "://" not in url:
        path = Path(url.removeprefix("journal://")) if url else out / STUDY_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise CompressError(f"--storage {url}: {exc}") from None
    try:
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # a bad URL or driver, an unreachable server: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressError(f"--storage {url}: {first}") from None


def open_study(
    out: Path,
    objective: str,
    spaces: dict[str, Space],
    max_drop: float | None,
    trials: int,
    seed: int,
    start: dict[str, Any] | None = None,
    limits: Limits | None = None,
    storage_url: str | None = None,
):
    """Create or reopen the study (open_storage); a study made with other spaces,
    objective or budget is an error (it would mix two searches). A new study's first trial
    is `start` (the pipeline's own settings) when given; of processes starting at once on
    one storage, only the one that creates the study queues it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(out, storage_url)
    settings = {
        "objective": objective,
        "spaces": [asdict(s) for s in spaces.values()],
        "max_drop": max_drop,
    }
    if limits is not None:  # a study without them is stored as before
        settings["limits"] = {k: v for k, v in asdict(limits).items() if v is not None}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as stored
    existing = bool(storage.get_all_studies())
    done = _check_settings(out, storage, settings) if existing else 0
    seed = seed + done  # a resumed search draws new random points, not the first ones again
    if storage_url is not None:
        seed += os.getpid()  # processes sharing the study draw different points
    startup = max(3, min(10, trials // 3))
    if objective in ("size", "latency"):
        # infeasible trials (over the budget) are known to TPE through Trial.set_constraint
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
        directions = ["minimize"]
    else:
        population = max(4, min(50, trials // 3))
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        directions = ["minimize", "maximize"]
    try:
        study = optuna.create_study(
            study_name="search", storage=storage, sampler=sampler, directions=directions
        )
    except optuna.exceptions.DuplicatedStudyError:  # another process made it first
        study = optuna.load_study(study_name="search", storage=storage, sampler=sampler)
        _check_settings(out, storage, settings)
        existing = True
    if not existing:
        study.set_user_attr("settings", settings)
        if start:
            study.enqueue_trial(
                {k: json.dumps(v) if spaces[k].kind == "choice" else v for k, v in start.items()},
                user_attrs={"from_file": True},
            )
    return study


def _check_settings(out: Path, storage, settings: dict, wait_s: float = 10.0) -> int:
    """That the stored study is the same search (its settings, which the process that made
    it sets just after making it: waited for a little); returns its number of trials."""
    import time

    import optuna

    deadline = time.monotonic() + wait_s
    while True:
        stored = optuna.load_study(study_name="search", storage=storage)
        found = stored.user_attrs.get("settings")
        if found is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if found != settings:
        raise CompressError(
            f"{out} holds a search with other settings "
            f"({_settings_text(found)}); use the same --param, "
            "--objective, --max-drop and device limits to resume it, or another --out"
        )
    return len(stored.trials)


def _settings_text(settings: dict | None) -> str:
    if not settings:
        return "unknown"
    spaces = ", ".join(
        f"{s['key']}={Space(**{**s, 'choices': tuple(s['choices'])}).describe()}"
        for s in settings["spaces"]
    )
    return f"objective {settings['objective']}, max-drop {settings['max_drop']}, {spaces}"


def recover_interrupted(study, shared: bool = False) -> int:
    """Trials left running by an interrupted search: mark them failed (without an `error`,
    which is how they are told from real failures) and queue their settings again, so
    that the rerun finishes them. Returns how many. On a shared storage (`shared`) other
    processes' trials are running for real: only those of a process of this machine that
    is gone are taken."""
    from optuna.trial import TrialState

    stale = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not shared or _owner_gone(t.user_attrs.get("worker"))
    ]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    return len(stale)


def worker_id() -> str:
    """Which process runs a trial (machine and process id), kept in the trial."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(worker: str | None) -> bool:
    import os
    import socket

    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: it may still run it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid) == os.getpid()  # this process's own, left by an earlier call


def interrupted(trial) -> bool:
    return trial.state.name == "FAIL" and "error" not in trial.user_attrs


def surplus(trial) -> bool:
    """A trial asked for by one of several processes after the others had filled the
    budget: given up at once, never run, left out of every count and table."""
    return bool(trial.user_attrs.get("surplus"))


def taken(study, before: int | None = None) -> int:
    """Trials that fill the budget, over every process sharing the study: finished, failed
    or running, not interrupted nor surplus (those numbered below `before` only)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=states)
        if not interrupted(t) and not surplus(t) and (before is None or t.number < before)
    )


def counted(study) -> int:
    """Trials that count towards --trials: finished or failed, not interrupted."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if not interrupted(t) and not surplus(t)
    )


# ---------------------------------------------------------------- the search


def run_search(
    pipeline: str | Path,
    spaces: dict[str, Space],
    out_dir: str | Path,
    max_drop: float | Limits | None = None,
    trials: int = 20,
    objective: str = "size",
    jobs: int = 1,
    ray_address: str | None = None,
    data_root: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    options: StudyOptions = StudyOptions(),
) -> Search:
    """Run (or resume) the search; write `<out>/search.json`, `search.md`,
    `search-history.png` and `search-front.png`; return the summary. `storage`: an Optuna
    storage URL several processes share (open_storage); the budget counts all their
    trials, and each writes the summary of what is finished when its own trials end.

    `max_drop`: the accuracy budget in points, or a compress.budget.Limits holding it
    (`max_drop`) and the device limits every chosen artifact must be within too (flash, RAM,
    activation, latency vs dense): a trial whose best artifact misses them is infeasible."""
    max_drop, limits = split_limits(max_drop)
    seed, storage = options.seed, options.storage

    from compress.pipeline import check_inputs

    if objective not in OBJECTIVES:
        raise CompressError(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if objective in ("size", "latency") and max_drop is None:
        raise CompressError(
            f"--objective {objective} needs --max-drop PTS (the accuracy budget on validation)"
        )
    if max_drop is not None and max_drop < 0:
        raise CompressError(f"--max-drop {max_drop:g}: give 0 or more points")
    if trials < 1:
        raise CompressError(f"--trials {trials}: give 1 or more")
    pipeline = Path(pipeline).resolve()
    config = load_pipeline(pipeline)
    if ray_address is not None:
        import_ray()  # before any work: a missing Ray is a usage error
    check_inputs(config, data_root)  # data and model, once, before any folder is made
    jobs = max(1, jobs)
    settings = TaskSettings.of(
        pipeline,
        out_dir,
        data_root,
        cache_dir,
        device,
        threads or max(1, available_cpus() // jobs),
        what="search trial",
    )
    out = Path(settings.out)

    study = open_study(
        out,
        objective,
        spaces,
        max_drop,
        trials,
        seed,
        start=file_settings(config, spaces),
        limits=limits,
        storage_url=storage,
    )
    retried = recover_interrupted(study, shared=storage is not None)
    if retried:
        log.info("search: resuming; %d interrupted trial(s) will run again", retried)

    with Runner(
        jobs, ray_address, keep_going=True
    ) as runner:  # a failed trial is recorded, not raised
        # the reference: the pipeline as written; its dense model sets the accuracy bar
        reference = _reference(runner, settings)
        if "error" in reference:
            raise CompressError(
                f"the reference run (the pipeline as written) failed: {reference['error']}"
            )
        reference_val = dense_val(reference["report"], REFERENCE)
        pending: dict[str, Any] = {}
        start = counted(study)
        if start:
            log.info("search: %d of %d trials already done in %s", start, trials, out)
        asking = True
        while asking or pending:
            while asking and len(pending) < jobs:
                trial = _ask(study, trials)
                if trial is None:  # the budget is filled (over every process of the study)
                    asking = False
                    break
                overrides = {key: suggest(trial, space) for key, space in spaces.items()}
                name = f"trial-{trial.number:04d}"
                trial.set_user_attr("overrides", overrides)
                trial.set_user_attr("run_dir", str(out / name))
                log.info("search: %s %s", name, overrides_text(overrides))
                pending[name] = trial
                runner.submit(settings.task(name, overrides))
            if not pending:
                break
            for result in runner.wait():
                trial = pending.pop(result["name"])
                _tell(study, trial, result, reference_val, (max_drop, limits), objective)
                log.info(
                    "search: %s %s (%d/%d)",
                    result["name"],
                    _outcome_text(study, trial.number),
                    counted(study),
                    trials,
                )
    summary = summarize(
        study,
        config.name,
        str(pipeline),
        spaces,
        objective,
        max_drop,
        trials,
        reference,
        reference_val,
        limits,
    )
    write_search(out, summary)
    return summary


def _ask(study, trials: int):
    """The next trial, or None when the budget is filled. Processes sharing the study ask at
    the same time; the trial numbers say who came first, so one that finds the budget filled
    by trials numbered before its own gives it up (surplus) and stops."""
    from optuna.trial import TrialState

    if taken(study) >= trials:
        return None
    trial = study.ask()
    if taken(study, before=trial.number) >= trials:
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    trial.set_user_attr("worker", worker_id())
    return trial


def _reference(runner: Runner, settings: TaskSettings, wait_s: float = 2.0) -> dict:
    """The reference run; while another search process sharing the folder runs it (its run
    folder is locked), wait, then take it from the run folder."""
    import time

    while True:
        runner.submit(settings.task(REFERENCE, {}))
        reference = runner.wait()[0]
        if "is in use by another run" not in reference.get("error", ""):
            return reference
        log.info("search: another process runs the reference; waiting for it")
        time.sleep(wait_s)


def _tell(study, trial, result: dict, reference_val: float, budget: tuple, objective: str) -> None:
    """Record a finished trial; `budget`: (max_drop, device limits or None)."""
    from optuna.trial import TrialState

    max_drop, limits = budget
    if "error" in result:
        trial.set_user_attr("error", result["error"])
        study.tell(trial, state=TrialState.FAIL)
        return
    report = result["report"]
    rows = artifact_rows(report, reference_val, result["name"], limits)
    best = trial_score(rows, max_drop, objective, limits)
    stages = report["stages"]
    trial.set_user_attr("artifacts", rows)
    trial.set_user_attr("stages_reused", [s["name"] for s in stages if s["cached"]])
    trial.set_user_attr("stages_total", len(stages))
    if best is None:
        trial.set_user_attr("error", "no compressed artifact was verified")
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("best", best)
    # <= 0 is feasible: how far the trial's artifact is beyond the budget, in points
    constraint = constraint_of(best, max_drop, limits)
    trial.set_user_attr("constraint", constraint)
    if max_drop is not None or limits is not None:
        trial.set_constraint("drop_beyond_budget", constraint)
    study.tell(trial, objective_values(best, objective))


def objective_values(best: SearchArtifact, objective: str) -> list[float]:
    """What the study minimizes (and, for pareto, maximizes) for a trial's artifact."""
    if objective == "pareto":
        return [best["deploy_bytes"], best["val_accuracy"]]
    value = best.get(MEASURE[objective])
    return [float("inf") if value is None else value]


def _outcome_text(study, number: int) -> str:
    t = study.get_trials(deepcopy=False)[number]
    if t.user_attrs.get("error"):
        return f"failed: {t.user_attrs['error']}"
    b = t.user_attrs["best"]
    mark = "" if t.user_attrs["constraint"] <= 0 else " (misses the budget)"
    return (
        f"{b['artifact']} {b['deploy_bytes']:,} bytes, val {b['val_accuracy']:.2%} "
        f"({delta(b['drop'])} pts){mark}"
    )


# ---------------------------------------------------------------- summary


def trial_records(study) -> list[SearchTrial]:
    """One plain record per trial, in order, from the study (this run's and earlier ones)."""
    records = []
    for t in study.get_trials(deepcopy=False):
        if surplus(t):
            continue
        attrs = t.user_attrs
        if interrupted(t):
            state = "interrupted"
        elif t.state.name == "COMPLETE":
            state = "ok" if attrs.get("constraint", 0) <= 0 else "misses budget"
        else:
            state = t.state.name.lower()
        records.append(
            {
                "number": t.number,
                "name": f"trial-{t.number:04d}",
                "state": state,
                "overrides": attrs.get("overrides", {}),
                "run_dir": attrs.get("run_dir"),
                "best": attrs.get("best"),
                "artifacts": attrs.get("artifacts", []),
                "stages_reused": attrs.get("stages_reused", []),
                "stages_total": attrs.get("stages_total", 0),
                "error": attrs.get("error"),
                "retry_of": attrs.get("retry_of"),
                "from_file": attrs.get("from_file", False),
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            }
        )
    return records


def search_points(records: list[SearchTrial]) -> list[SearchPoint]:
    """Every verified artifact of every finished trial, as points for the frontier and the
    budget."""
    points = []
    for r in records:
        if r["state"] not in ("ok", "misses budget"):
            continue
        for a in r["artifacts"]:
            points.append(
                {
                    **a,
                    "label": f"{r['name']}/{a['artifact']}",
                    "trial": r["name"],
                    "run_dir": r["run_dir"],
                }
            )
    return points


def test_accuracies(labels: list[str], points: list[dict]) -> dict[str, float | None]:
    """The test accuracy of the named artifacts, read from their run's report.json now
    (after every decision was made)."""
    from compress.files import read_json

    by_label = {p["label"]: p for p in points}
    out = {}
    for label in labels:
        p = by_label[label]
        report = read_json(Path(p["run_dir"]) / "report.json")
        out[label] = next(
            (a[TEST] for a in report["artifacts"] if a["name"] == p["artifact"]), None
        )
    return out


def summarize(
    study,
    name: str,
    pipeline: str,
    spaces: dict[str, Space],
    objective: str,
    max_drop: float | None,
    trials: int,
    reference: dict,
    reference_val: float,
    limits: Limits | None = None,
) -> Search:
    records = trial_records(study)
    points = search_points(records)
    front = pareto_frontier(points)
    budget = (
        within_budget(points, max_drop, limits=limits, by=MEASURE[objective])
        if max_drop is not None
        else None
    )
    if budget is not None and limits is not None:
        budget["limits"] = {k: v for k, v in asdict(limits).items() if v is not None}
    chosen = budget["chosen"] if budget else None
    finished = [r for r in records if r["state"] in ("ok", "misses budget")]
    stages_total = sum(r["stages_total"] for r in finished)
    stages_reused = sum(len(r["stages_reused"]) for r in finished)
    train_runs = sum(1 for r in finished if "train" not in r["stages_reused"])
    ref_report = reference["report"]
    ref_rows = artifact_rows(ref_report, reference_val, REFERENCE, limits)
    ref_best = trial_score(ref_rows, max_drop, objective, limits)
    # the answer's test accuracy: the chosen artifact (size), or the front (pareto)
    reported = [chosen] if chosen else []
    if objective == "pareto":
        reported += [p["label"] for p in front if p["label"] not in reported]
    return {
        "pipeline": name,
        "pipeline_file": pipeline,
        "objective": objective,
        "spaces": {k: s.describe() for k, s in spaces.items()},
        "max_drop": max_drop,
        "trials_wanted": trials,
        "reference": {
            "run_dir": reference["run_dir"],
            "dense_val_accuracy": reference_val,
            "best": ref_best,
        },
        "trials": records,
        "counts": {
            state: sum(1 for r in records if r["state"] == state)
            for state in ("ok", "misses budget", "fail", "interrupted")
        },
        "stages_total": stages_total,
        "stages_reused": stages_reused,
        "train_runs": train_runs,
        "points": points,
        "frontier": [p["label"] for p in front],
        "budget": budget,
        "chosen": chosen,
        # read last, for the chosen artifact and the front only: reported, never used to choose
        "test_accuracy": test_accuracies(reported, points),
    }
