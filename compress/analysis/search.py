"""Search: tune several settings of a pipeline at once (say the L1 strength and the pruning
threshold) by Bayesian optimization, judging every trial on the validation split.

    spaces = parse_spaces(["train.l1.lambda=log(1e-5,1e-3)", "prune.threshold=(0.005,0.08)"])
    result = run_search("pipelines/mnist.toml", spaces, out_dir="runs/search", max_drop=0.5, trials=20)
    result["chosen"], result["front"], result["test"]

Spaces: `(low, high)` uniform, `log(low, high)` log-uniform, `int(low, high)` integers, or a
list of choices as a TOML array (`[["static"], ["static-int4"]]`); parsed, never evaluated.

Objectives: `size` (default) looks for the smallest deploy size whose validation accuracy is
at most `max_drop` points below the reference (Optuna's TPE; a trial that misses the budget
is infeasible through TPE's constraints); `pareto` looks for the front of deploy size
against validation accuracy (NSGA-II). The reference is the dense model of the pipeline
as written, run once as `<out>/reference`, so that a stronger L1 penalty cannot lower the
bar by weakening its own dense model. Test accuracy decides nothing: it is read for the
chosen artifacts at the end only.

The first trial is the pipeline's own settings when they lie in every space (a known point,
already made by the reference run). Every trial is a run folder `<out>/trial-NNNN/` sharing the stage cache `<out>/cache`
(compress.cache) with the others, so trials with the same training settings train once.
The Optuna study lives in `<out>/study.journal`: a rerun of the same command after Ctrl-C
continues it (finished trials are kept, interrupted ones are run again). A trial that
fails is recorded as failed, and the search goes on.
"""

from __future__ import annotations

import json
import logging
import math
import re
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from compress import tables
from compress.analysis.reference import REFERENCE, dense_val
from compress.analysis.sweep import (
    available_cpus,
    delta,
    import_ray,
    pareto_frontier,
    parse_literal,
    run_variant,
    within_budget,
)
from compress.config import PipelineConfig, load_pipeline
from compress.errors import CompressError
from compress.files import write_json, write_text
from compress.results import DENSE, VAL, accuracy_points

log = logging.getLogger(__name__)

OBJECTIVES = ("size", "pareto")
STUDY_FILE = "study.journal"
FLOAT_DIGITS = 3  # sampled floats are rounded to 3 significant digits, so near-equal draws share stages


# ---------------------------------------------------------------- spaces


@dataclass(frozen=True)
class Space:
    """One searched setting: kind is "uniform", "log", "int" or "choice"."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        name = {"uniform": "", "log": "log", "int": "int"}[self.kind]
        return f"{name}({self.low:g}, {self.high:g})"


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^(log|int)?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)$")


def parse_space(key: str, text: str | list) -> Space:
    """`log(1e-5, 1e-3)` -> Space(key, "log", 1e-5, 1e-3); a list (or TOML array text) is
    a choice. Raises CompressError naming the key on anything else."""
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", key):
        raise CompressError(f"search key {key!r}: expected a dotted setting such as prune.threshold")
    if isinstance(text, str) and text.strip().startswith("["):
        try:
            text = parse_literal(text.strip())
        except CompressError as exc:
            raise CompressError(f"search {key}: {exc}") from None
    if isinstance(text, list):
        if not text:
            raise CompressError(f"search {key}: the list of choices is empty")
        return Space(key, "choice", choices=tuple(text))
    match = _RANGE.match(str(text).strip())
    if not match:
        raise CompressError(f"search {key}={text!r}: expected (low, high), log(low, high), int(low, high) "
                            "or a list of choices such as [\"a\", \"b\"]")
    kind = match.group(1) or "uniform"
    low, high = float(match.group(2)), float(match.group(3))
    if kind == "int":
        if not (low.is_integer() and high.is_integer()):
            raise CompressError(f"search {key}={text}: int(low, high) takes whole numbers")
        low, high = int(low), int(high)
    if not low < high:
        raise CompressError(f"search {key}={text}: low ({low:g}) must be below high ({high:g})")
    if kind == "log" and low <= 0:
        raise CompressError(f"search {key}={text}: log(low, high) needs low > 0")
    return Space(key, kind, low, high)


def parse_param(spec: str) -> Space:
    """`--param KEY=SPACE`."""
    key, sep, text = spec.partition("=")
    if not sep or not key.strip() or not text.strip():
        raise CompressError(f"--param {spec!r}: expected KEY=SPACE, e.g. prune.threshold=(0.005,0.08)")
    return parse_space(key, text)


def search_spaces(config: PipelineConfig, params: list[str] = ()) -> dict[str, Space]:
    """The pipeline's [search] table with --param options added (a --param replaces the
    same key); every corner of every space is checked against the pipeline now."""
    spaces = {key: parse_space(key, value) for key, value in config.search.items()}
    for spec in params:
        space = parse_param(spec)
        spaces[space.key] = space
    if not spaces:
        raise CompressError("nothing to search: give --param KEY=SPACE or a [search] table in the pipeline file")
    for space in spaces.values():
        values = list(space.choices) if space.kind == "choice" else [space.low, space.high]
        for value in values:
            try:
                config.with_overrides({space.key: value})
            except CompressError as exc:
                raise CompressError(f"search {space.key}={space.describe()}: {exc}") from None
    return spaces


def suggest(trial, space: Space) -> Any:
    """Draw a value for `space` from an Optuna trial (choices travel as JSON strings, since
    Optuna's categorical values must be plain scalars)."""
    if space.kind == "choice":
        return json.loads(trial.suggest_categorical(space.key, [json.dumps(c) for c in space.choices]))
    if space.kind == "int":
        return trial.suggest_int(space.key, space.low, space.high)
    value = trial.suggest_float(space.key, space.low, space.high, log=space.kind == "log")
    return float(f"{value:.{FLOAT_DIGITS}g}")


# ---------------------------------------------------------------- one trial


def run_trial(task: dict) -> dict:
    """Run one trial's pipeline (plain dicts in and out, for processes and Ray); a failure
    comes back as {"error": ...} instead of stopping the search."""
    try:
        result = run_variant(task)
    except Exception as exc:  # noqa: BLE001 - one failed trial must not end the search
        message = " ".join(str(exc).splitlines()) or type(exc).__name__
        return {"name": task["name"], "run_dir": task["run_dir"], "error": f"{type(exc).__name__}: {message}"}
    return {"name": task["name"], "run_dir": task["run_dir"], "report": result["report"]}


def artifact_rows(report: dict, reference_val: float, where: str) -> list[dict]:
    """The artifacts of one run with their validation accuracy and drop against the reference."""
    rows = []
    for a in report["artifacts"]:
        if a.get("val_accuracy") is None:
            raise CompressError(f"{where}: artifact {a['name']} has no val_accuracy in report.json; "
                                "search needs a compress that measures accuracy on the validation split")
        rows.append({"artifact": a["name"], "val_accuracy": a["val_accuracy"],
                     "drop": round(-accuracy_points(reference_val, a[VAL]), 4),
                     "deploy_bytes": a["deploy_bytes"], "sparsity": a["sparsity"], "status": a["status"]})
    return rows


def trial_score(rows: list[dict], max_drop: float | None) -> dict | None:
    """The trial's representative artifact (other than dense): the smallest within the
    budget, else (or with no budget) the smallest; None when none was verified."""
    ok = [r for r in rows if r["artifact"] != DENSE and r["status"] == "ok"]
    if not ok:
        return None
    meets = [r for r in ok if max_drop is None or r["drop"] <= max_drop + 1e-9]
    if meets:
        return min(meets, key=lambda r: (r["deploy_bytes"], -r["val_accuracy"]))
    return min(ok, key=lambda r: (r["drop"], r["deploy_bytes"]))


# ---------------------------------------------------------------- running trials


class _Inline:
    """Trials one after another in this process."""

    def __init__(self):
        self.queue: list[dict] = []

    def submit(self, task: dict) -> None:
        self.queue.append(task)

    def wait(self) -> list[dict]:
        return [run_trial(self.queue.pop(0))]

    def close(self) -> None:
        pass


class _Processes:
    """Trials in `jobs` spawned worker processes (as sweeps run their variants)."""

    def __init__(self, jobs: int):
        # spawn: forking a process that has used torch's thread pools can hang
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
        self.futures: set = set()

    def submit(self, task: dict) -> None:
        self.futures.add(self.pool.submit(run_trial, task))

    def wait(self) -> list[dict]:
        done, self.futures = wait(self.futures, return_when=FIRST_COMPLETED)
        return [f.result() for f in done]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Ray:
    """Trials as Ray tasks ("local" starts a private cluster, anything else joins one)."""

    def __init__(self, address: str, jobs: int, threads: int):
        self.ray = import_ray()
        self.started_here = not self.ray.is_initialized()
        if self.started_here:
            options = {"num_cpus": jobs * threads, "include_dashboard": False} if address == "local" else {}
            self.ray.init(address=address, log_to_driver=False, **options)
        self.remote = self.ray.remote(num_cpus=threads)(run_trial)
        self.refs: list = []

    def submit(self, task: dict) -> None:
        self.refs.append(self.remote.remote(task))

    def wait(self) -> list[dict]:
        done, self.refs = self.ray.wait(self.refs, num_returns=1)
        return self.ray.get(done)

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        if self.started_here:
            self.ray.shutdown()


def make_runner(jobs: int, ray_address: str | None, threads: int):
    if ray_address is not None:
        return _Ray(ray_address, jobs, threads)
    return _Processes(jobs) if jobs > 1 else _Inline()


# ---------------------------------------------------------------- the study


def open_study(out: Path, objective: str, spaces: dict[str, Space], max_drop: float | None, trials: int,
               seed: int, start: dict[str, Any] | None = None):
    """Create or reopen the study in `<out>/study.journal`; a study made with other spaces,
    objective or budget is an error (it would mix two searches). A new study's first trial
    is `start` (the pipeline's own settings) when given."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(out / STUDY_FILE)))
    settings = {"objective": objective, "spaces": [asdict(s) for s in spaces.values()], "max_drop": max_drop}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as stored
    existing = bool(storage.get_all_studies())
    done = 0
    if existing:
        stored = optuna.load_study(study_name="search", storage=storage)
        if stored.user_attrs.get("settings") != settings:
            raise CompressError(f"{out} holds a search with other settings "
                                f"({_settings_text(stored.user_attrs.get('settings'))}); use the same --param, "
                                "--objective and --max-drop to resume it, or another --out")
        done = len(stored.trials)
    seed = seed + done  # a resumed search draws new random points, not the first ones again
    startup = max(3, min(10, trials // 3))
    if objective == "size":
        # infeasible trials (over the budget) are known to TPE through Trial.set_constraint
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
        directions = ["minimize"]
    else:
        population = max(4, min(50, trials // 3))
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        directions = ["minimize", "maximize"]
    study = optuna.create_study(study_name="search", storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)
    if not existing:
        study.set_user_attr("settings", settings)
        if start:
            study.enqueue_trial({k: json.dumps(v) if spaces[k].kind == "choice" else v for k, v in start.items()},
                                user_attrs={"from_file": True})
    return study


def file_settings(config: PipelineConfig, spaces: dict[str, Space]) -> dict[str, Any] | None:
    """The pipeline file's own value of every searched key, when each lies in its space
    (else None): the search starts from it, a known point that costs nothing, since the
    reference run has already made every one of its stages."""
    data = config.model_dump(by_alias=True)
    values = {}
    for key, space in spaces.items():
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        inside = (node in space.choices if space.kind == "choice"
                  else isinstance(node, (int, float)) and not isinstance(node, bool)
                  and space.low <= node <= space.high and (space.kind != "int" or float(node).is_integer()))
        if not inside:
            return None
        values[key] = node
    return values


def _settings_text(settings: dict | None) -> str:
    if not settings:
        return "unknown"
    spaces = ", ".join(f"{s['key']}={Space(**{**s, 'choices': tuple(s['choices'])}).describe()}"
                       for s in settings["spaces"])
    return f"objective {settings['objective']}, max-drop {settings['max_drop']}, {spaces}"


def recover_interrupted(study) -> int:
    """Trials left running by an interrupted search: mark them failed (without an `error`,
    which is how they are told from real failures) and queue their settings again, so
    that the rerun finishes them. Returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    return len(stale)


def interrupted(trial) -> bool:
    return trial.state.name == "FAIL" and "error" not in trial.user_attrs


def counted(study) -> int:
    """Trials that count towards --trials: finished or failed, not interrupted."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
               if not interrupted(t))


# ---------------------------------------------------------------- the search


def run_search(
    pipeline: str | Path,
    spaces: dict[str, Space],
    out_dir: str | Path,
    max_drop: float | None = None,
    trials: int = 20,
    objective: str = "size",
    jobs: int = 1,
    ray_address: str | None = None,
    data_root: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    seed: int = 0,
) -> dict:
    """Run (or resume) the search; write `<out>/search.json`, `search.md`,
    `search-history.png` and `search-front.png`; return the summary."""

    from compress.pipeline import check_inputs

    if objective not in OBJECTIVES:
        raise CompressError(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if objective == "size" and max_drop is None:
        raise CompressError("--objective size needs --max-drop PTS (the accuracy budget on validation)")
    if max_drop is not None and max_drop < 0:
        raise CompressError(f"--max-drop {max_drop:g}: give 0 or more points")
    if trials < 1:
        raise CompressError(f"--trials {trials}: give 1 or more")
    pipeline = Path(pipeline).resolve()
    config = load_pipeline(pipeline)
    if ray_address is not None:
        import_ray()  # before any work: a missing Ray is a usage error
    check_inputs(config, data_root)  # data and model, once, before any folder is made
    out = Path(out_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir else out / "cache"
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    jobs = max(1, jobs)
    threads = threads or max(1, available_cpus() // jobs)
    inline = ray_address is None and jobs == 1
    if inline:
        import torch

        torch.set_num_threads(threads)

    study = open_study(out, objective, spaces, max_drop, trials, seed, start=file_settings(config, spaces))
    retried = recover_interrupted(study)
    if retried:
        log.info("search: resuming; %d interrupted trial(s) will run again", retried)

    def task(name: str, overrides: dict) -> dict:
        return {"name": name, "overrides": overrides, "pipeline": str(pipeline), "run_dir": str(out / name),
                "data_root": root, "cache_dir": str(cache), "device": device,
                "worker": not inline, "threads": threads}

    runner = make_runner(jobs, ray_address, threads)
    try:
        # the reference: the pipeline as written; its dense model sets the accuracy bar
        runner.submit(task(REFERENCE, {}))
        reference = runner.wait()[0]
        if "error" in reference:
            raise CompressError(f"the reference run (the pipeline as written) failed: {reference['error']}")
        reference_val = dense_val(reference["report"], REFERENCE)
        pending: dict[str, Any] = {}
        start = counted(study)
        if start:
            log.info("search: %d of %d trials already done in %s", start, trials, out)
        while counted(study) + len(pending) < trials or pending:
            while len(pending) < jobs and counted(study) + len(pending) < trials:
                trial = study.ask()
                overrides = {key: suggest(trial, space) for key, space in spaces.items()}
                name = f"trial-{trial.number:04d}"
                trial.set_user_attr("overrides", overrides)
                trial.set_user_attr("run_dir", str(out / name))
                log.info("search: %s %s", name, _overrides_text(overrides))
                pending[name] = trial
                runner.submit(task(name, overrides))
            for result in runner.wait():
                trial = pending.pop(result["name"])
                _tell(study, trial, result, reference_val, max_drop, objective)
                log.info("search: %s %s (%d/%d)", result["name"], _outcome_text(study, trial.number),
                         counted(study), trials)
    finally:
        runner.close()
    summary = summarize(study, config.name, str(pipeline), spaces, objective, max_drop, trials,
                        reference, reference_val)
    write_search(out, summary)
    return summary


def _tell(study, trial, result: dict, reference_val: float, max_drop: float | None, objective: str) -> None:
    from optuna.trial import TrialState

    if "error" in result:
        trial.set_user_attr("error", result["error"])
        study.tell(trial, state=TrialState.FAIL)
        return
    report = result["report"]
    rows = artifact_rows(report, reference_val, result["name"])
    best = trial_score(rows, max_drop)
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
    constraint = best["drop"] - max_drop if max_drop is not None else 0.0
    trial.set_user_attr("constraint", constraint)
    if max_drop is not None:
        trial.set_constraint("drop_beyond_budget", constraint)
    values = [best["deploy_bytes"]] if objective == "size" else [best["deploy_bytes"], best["val_accuracy"]]
    study.tell(trial, values)


def _overrides_text(overrides: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())


def _outcome_text(study, number: int) -> str:
    t = study.get_trials(deepcopy=False)[number]
    if t.user_attrs.get("error"):
        return f"failed: {t.user_attrs['error']}"
    b = t.user_attrs["best"]
    mark = "" if t.user_attrs["constraint"] <= 0 else " (misses the budget)"
    return (f"{b['artifact']} {b['deploy_bytes']:,} bytes, val {b['val_accuracy']:.2%} "
            f"({delta(b['drop'])} pts){mark}")


# ---------------------------------------------------------------- summary


def trial_records(study) -> list[dict]:
    """One plain record per trial, in order, from the study (this run's and earlier ones)."""
    records = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if interrupted(t):
            state = "interrupted"
        elif t.state.name == "COMPLETE":
            state = "ok" if attrs.get("constraint", 0) <= 0 else "misses budget"
        else:
            state = t.state.name.lower()
        records.append({
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
        })
    return records


def search_points(records: list[dict]) -> list[dict]:
    """Every verified artifact of every finished trial, as points for the front and the
    budget (`accuracy` is the validation accuracy here)."""
    points = []
    for r in records:
        if r["state"] not in ("ok", "misses budget"):
            continue
        for a in r["artifacts"]:
            points.append({**a, "label": f"{r['name']}/{a['artifact']}", "trial": r["name"],
                           "run_dir": r["run_dir"], "accuracy": a["val_accuracy"]})
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
        out[label] = next((a["accuracy"] for a in report["artifacts"] if a["name"] == p["artifact"]), None)
    return out


def summarize(study, name: str, pipeline: str, spaces: dict[str, Space], objective: str,
              max_drop: float | None, trials: int, reference: dict, reference_val: float) -> dict:
    records = trial_records(study)
    points = search_points(records)
    front = pareto_frontier(points)
    budget = within_budget(points, max_drop) if max_drop is not None else None
    chosen = budget["chosen"] if budget else None
    finished = [r for r in records if r["state"] in ("ok", "misses budget")]
    stages_total = sum(r["stages_total"] for r in finished)
    stages_reused = sum(len(r["stages_reused"]) for r in finished)
    train_runs = sum(1 for r in finished if "train" not in r["stages_reused"])
    ref_report = reference["report"]
    ref_best = trial_score(artifact_rows(ref_report, reference_val, REFERENCE), max_drop)
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
        "reference": {"run_dir": reference["run_dir"], "dense_val_accuracy": reference_val, "best": ref_best},
        "trials": records,
        "counts": {state: sum(1 for r in records if r["state"] == state)
                   for state in ("ok", "misses budget", "fail", "interrupted")},
        "stages_total": stages_total,
        "stages_reused": stages_reused,
        "train_runs": train_runs,
        "points": points,
        "front": [p["label"] for p in front],
        "budget": budget,
        "chosen": chosen,
        # read last, for the chosen artifact and the front only: reported, never used to choose
        "test_accuracy": test_accuracies(reported, points),
    }


# ---------------------------------------------------------------- output


def reuse_sentence(summary: dict) -> str:
    n = summary["counts"]["ok"] + summary["counts"]["misses budget"]
    return (f"{n} finished trials: reused {summary['stages_reused']} of {summary['stages_total']} stages "
            f"from the stage cache; training ran in {summary['train_runs']} of {n} trials")


def chosen_sentence(summary: dict) -> str:
    by_label = {p["label"]: p for p in summary["points"]}
    ref = summary["reference"]["dense_val_accuracy"]
    if summary["budget"] is None:
        return f"no budget given (reference dense: {ref:.2%} on validation)"
    if summary["chosen"]:
        p = by_label[summary["chosen"]]
        settings = next(r["overrides"] for r in summary["trials"] if r["name"] == p["trial"])
        return (f"chosen: {p['label']} ({_overrides_text(settings)}), {p['deploy_bytes']:,} deploy bytes, "
                f"validation {p['val_accuracy']:.2%} ({delta(p['drop'])} pts against the reference dense "
                f"{ref:.2%}), in {p['run_dir']}")
    return f"nothing meets the budget: no artifact is within {summary['max_drop']:g} pts of the reference dense ({ref:.2%})"


def reference_sentence(summary: dict) -> str:
    b = summary["reference"]["best"]
    if not b:
        return "the pipeline as written: no compressed artifact verified"
    return (f"the pipeline as written: {b['artifact']} {b['deploy_bytes']:,} deploy bytes, validation "
            f"{b['val_accuracy']:.2%} ({delta(b['drop'])} pts)")


def test_lines(summary: dict) -> list[str]:
    by_label = {p["label"]: p for p in summary["points"]}
    lines = []
    for label, acc in summary["test_accuracy"].items():
        p = by_label[label]
        role = "chosen" if label == summary["chosen"] else "front"
        lines.append(f"{label} ({role}): test {acc:.2%}, validation {p['val_accuracy']:.2%}, "
                     f"{p['deploy_bytes']:,} deploy bytes" if acc is not None else f"{label}: no test accuracy")
    return lines


def _value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value)


def trial_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    keys = list(summary["spaces"])
    headers = ["trial", *keys, "best artifact", "val %", "Δ pts", "deploy", "reused", "state"]
    rows = []
    for r in summary["trials"]:
        b = r["best"]
        state = r["state"] + (f" ({r['error']})" if r["error"] and r["state"] == "fail" else "")
        if r["from_file"]:
            state += ", the pipeline's own settings"
        if r["retry_of"] is not None:
            state += f", reruns trial {r['retry_of']}"
        rows.append([str(r["number"]), *(_value_text(r["overrides"][k]) if k in r["overrides"] else "-" for k in keys),
                     b["artifact"] if b else "-", f"{b['val_accuracy']:.2%}" if b else "-",
                     delta(b["drop"]) if b else "-", f"{b['deploy_bytes']:,}" if b else "-",
                     f"{len(r['stages_reused'])}/{r['stages_total']}" if r["stages_total"] else "-", state])
    return headers, rows


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return tables.markdown(headers, rows)


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return tables.text(headers, rows, left=lambda i, cell: True, strip=True)  # every column left-aligned


def front_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    by_label = {p["label"]: p for p in summary["points"]}
    headers = ["artifact", "val %", "Δ pts", "deploy", "sparsity"]
    rows = [[label, f"{p['val_accuracy']:.2%}", delta(p["drop"]), f"{p['deploy_bytes']:,}", f"{p['sparsity']:.1%}"]
            for label in summary["front"] for p in [by_label[label]]]
    return headers, rows


def _goal(summary: dict) -> str:
    if summary["objective"] == "size":
        return f"the smallest deploy size within {summary['max_drop']:g} pts of the reference dense on validation"
    return "the front of deploy size against validation accuracy"


def format_table(summary: dict) -> str:
    lines = [f"search of {summary['pipeline']}: {_goal(summary)}", *_text_table(*trial_rows(summary)), "", "front (validation):",
             *_text_table(*front_rows(summary)), "", reference_sentence(summary), chosen_sentence(summary),
             reuse_sentence(summary), "", "test accuracy (reported only, chosen on validation):",
             *[f"  {line}" for line in test_lines(summary)]]
    return "\n".join(lines)


def format_markdown(summary: dict) -> str:
    out = [f"# Search of {summary['pipeline']}", "", f"Looking for {_goal(summary)}.", ""]
    out += [f"- `{k}`: {v}" for k, v in summary["spaces"].items()]
    out += ["", f"{summary['trials_wanted']} trials wanted; " + ", ".join(f"{n} {s}" for s, n in summary["counts"].items())
            + ". Every decision uses validation accuracy; Δ pts is against the dense model of the pipeline as "
            f"written ({summary['reference']['dense_val_accuracy']:.2%} on validation).", "",
            reuse_sentence(summary) + ".", "", "## Chosen", "", chosen_sentence(summary) + ".", "",
            f"For comparison, {reference_sentence(summary)}.", "",
            "## Front", "", "No other artifact is both smaller and at least as accurate on validation.", ""]
    out += _markdown_table(*front_rows(summary))
    out += ["", "![deploy size against validation accuracy](search-front.png)", "", "## Trials", "",
            "Each trial's best artifact: the smallest within the budget, else the one closest to it. "
            "reused: stages taken from the stage cache.", ""]
    out += _markdown_table(*trial_rows(summary))
    out += ["", "![optimization history](search-history.png)", "", "## Test accuracy", "",
            "Read after the search, for the chosen artifact (and the front, for --objective pareto); "
            "it chose nothing.", ""]
    out += [f"- {line}" for line in test_lines(summary)]
    return "\n".join(out) + "\n"


def write_search(out: Path, summary: dict) -> None:
    write_json(out / "search.json", summary)
    write_text(out / "search.md", format_markdown(summary))
    plot_history(summary, out / "search-history.png")
    plot_front(summary, out / "search-front.png")


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from compress.files import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_history(summary: dict, path: Path) -> Path:
    """Each trial's best artifact size by trial number (ringed: misses the budget), and the
    best size so far among those within it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    done = [r for r in summary["trials"] if r["best"]]
    for state, color in (("ok", "tab:blue"), ("misses budget", "tab:red")):
        group = [r for r in done if r["state"] == state]
        ax.scatter([r["number"] for r in group], [r["best"]["deploy_bytes"] for r in group], s=30, color=color,
                   label="within budget" if state == "ok" else "misses budget", zorder=3)
    best, xs, ys = math.inf, [], []
    for r in done:
        if r["state"] == "ok":
            best = min(best, r["best"]["deploy_bytes"])
        if best < math.inf:
            xs.append(r["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1.2, label="best so far")
    for r in summary["trials"]:
        if r["state"] == "fail":
            ax.axvline(r["number"], color="tab:gray", linestyle=":", linewidth=1)
    if done:
        ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel("deploy bytes of the trial's best artifact (log scale)")
    ax.set_title(f"{summary['pipeline']}: search history ({summary['objective']})")
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    if done:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_front(summary: dict, path: Path) -> Path:
    """Every artifact of every trial, deploy size against validation accuracy, the front as
    a step line, the budget dashed and the chosen artifact ringed (front points labelled
    with their trial number)."""
    from compress.analysis.plot import _color

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    ok = [p for p in summary["points"] if p["status"] == "ok"]
    kinds: dict[str, list[dict]] = {}
    for p in ok:
        kinds.setdefault(p["artifact"], []).append(p)
    for artifact, group in sorted(kinds.items()):
        ax.scatter([p["deploy_bytes"] for p in group], [100 * p["val_accuracy"] for p in group], s=24,
                   color=_color(artifact), label=artifact, alpha=0.75, zorder=3)
    by_label = {p["label"]: p for p in ok}
    front = [by_label[x] for x in summary["front"] if x in by_label]
    if front:
        ax.step([p["deploy_bytes"] for p in front], [100 * p["val_accuracy"] for p in front], where="post",
                color="black", linewidth=1.2, label="front", zorder=2)
        # label front points by trial number, skipping one too close to a labelled one
        placed: list[tuple[float, float]] = []
        for p in front:
            x, y = math.log10(p["deploy_bytes"]), 100 * p["val_accuracy"]
            if any(abs(x - px) < 0.08 and abs(y - py) < 1.0 for px, py in placed):
                continue
            placed.append((x, y))
            ax.annotate(f"#{int(p['trial'].split('-')[1])}", (p["deploy_bytes"], y), xytext=(4, -9),
                        textcoords="offset points", fontsize=7)
    if summary["max_drop"] is not None:
        line = 100 * summary["reference"]["dense_val_accuracy"] - summary["max_drop"]
        ax.axhline(line, color="tab:red", linestyle="--", linewidth=1, label="accuracy budget")
    if summary["chosen"] in by_label:
        p = by_label[summary["chosen"]]
        ax.scatter([p["deploy_bytes"]], [100 * p["val_accuracy"]], s=220, facecolors="none",
                   edgecolors="tab:red", linewidths=1.8, zorder=4, label="chosen")
    ax.set_xscale("log")
    ax.set_xlabel("deploy bytes (smaller of .onnx.gz and .onnx.xz), log scale")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{summary['pipeline']}: deploy size against validation accuracy")
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    plt.close(fig)
    return path
