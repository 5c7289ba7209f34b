"""Bundles: a run's artifacts and a benchmark script in one archive, to time them on a device.

    path = write_bundle(Path("runs/mnist"))                 # runs/mnist-bundle.zip
    path = write_bundle(Path("runs/mnist"), Path("b.tar.gz"))
    # on the device:  unzip mnist-bundle.zip && python3 mnist-bundle/bench.py -o timings.json
    lines = device_table(load_report(run_dir), read_timings(Path("timings.json")))

The archive holds one folder: every artifact of the run's report.json (`dense.onnx` first,
the baseline), `manifest.json` (their names, files and input shapes) and `bench.py`, one
file that needs only Python 3, numpy and onnxruntime. bench.py carries compress.latency's
source as it is, so it times the artifacts as verify does: interleaved in rounds at batch 1
on `--threads` intra-op threads (1 by default), the latency over dense's as the median
per-round ratio with its 95% interval, on random normal inputs of each file's input shape
(the latency of these models does not depend on the values). It writes JSON: the device
(platform, processor, CPU count), its onnxruntime version, the settings and per artifact
`latency_ms_b1_p50`, `latency_ms_b1_p95`, `latency_vs_dense` and its `_low`/`_high`.
`compress report RUN --device-timings FILE` shows them beside the host's.
"""

from __future__ import annotations

import ast
import io
import json
import tarfile
import zipfile
from pathlib import Path

import onnx

import compress.latency
from compress.errors import CompressError
from compress.files import atomic_path, read_json
from compress.report import load_report
from compress.results import DENSE, Report
from compress.sections import VerifyConfig

FORMATS = (".zip", ".tar.gz")
TIMINGS_FORMAT = "compress-device-timings/1"

MAIN = """

def input_shape(entry):
    return [d if isinstance(d, int) and d > 0 else 1 for d in entry["input_shape"]][1:]


def main(argv=None):
    import argparse
    import json
    import os
    import platform

    import onnxruntime as ort

    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Time this bundle's ONNX files, interleaved.")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--repetitions", type=int, default=MANIFEST_DEFAULTS["repetitions"])
    parser.add_argument("--rounds", type=int, default=MANIFEST_DEFAULTS["rounds"])
    parser.add_argument("-o", "--output", default="timings.json", help="JSON file to write")
    args = parser.parse_args(argv)
    with open(os.path.join(here, "manifest.json")) as f:
        manifest = json.load(f)
    sessions, inputs = [], []
    rng = np.random.default_rng(0)
    for entry in manifest["artifacts"]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = os.path.join(here, entry["path"])
        sessions.append(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]))
        shape = [64, *input_shape(entry)]
        inputs.append(rng.standard_normal(shape).astype(np.float32))
    times = timed_rounds(sessions, inputs, args.repetitions, args.rounds)
    rows = []
    for entry, t in zip(manifest["artifacts"], summarize(times)):
        rows.append(
            {
                "name": entry["name"],
                "latency_ms_b1_p50": round(t["p50"], 4),
                "latency_ms_b1_p95": round(t["p95"], 4),
                "latency_vs_dense": round(t["vs_base"], 3),
                "latency_vs_dense_low": round(t["vs_base_low"], 3),
                "latency_vs_dense_high": round(t["vs_base_high"], 3),
            }
        )
    out = {
        "format": TIMINGS_FORMAT,
        "pipeline": manifest["pipeline"],
        "device": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "repetitions": args.repetitions,
        "rounds": args.rounds,
        "artifacts": rows,
    }
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2)
    for row in rows:
        print(
            f"{row['name']:24s} p50 {row['latency_ms_b1_p50']:.3f} ms  "
            f"{row['latency_vs_dense']:.2f}x dense "
            f"[{row['latency_vs_dense_low']:.2f}, {row['latency_vs_dense_high']:.2f}]"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
"""


def latency_source() -> str:
    """compress.latency's code without its docstring and `from __future__` line."""
    source = Path(compress.latency.__file__).read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and n is tree.body[0])]
    body = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return "\n".join(lines[body[0].lineno - 1 :]) + "\n"


def bench_script(pipeline: str, repetitions: int, rounds: int) -> str:
    """The bundle's bench.py: compress.latency's code and a main that times the manifest."""
    header = (
        f'"""Time the ONNX files of the {pipeline} bundle at batch 1, interleaved in rounds, as\n'
        "compress verify does; needs only numpy and onnxruntime. Writes timings.json for\n"
        "`compress report RUN --device-timings timings.json`.\n\n"
        "    python3 bench.py [--threads 1] [--repetitions N] [--rounds N] [-o timings.json]\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        f"TIMINGS_FORMAT = {TIMINGS_FORMAT!r}\n"
        f"MANIFEST_DEFAULTS = {{'repetitions': {repetitions}, 'rounds': {rounds}}}\n"
    )
    return header + latency_source() + MAIN


def _input_shape(path: Path) -> list[int | str]:
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def bundle_files(run_dir: Path) -> tuple[str, dict[str, bytes]]:
    """(folder name, {name in the folder: bytes}) of the bundle of a finished run."""
    report = load_report(run_dir)
    config = read_json(run_dir / "pipeline.json") if (run_dir / "pipeline.json").is_file() else {}
    verify = config.get("verify", {})
    artifacts = sorted(report["artifacts"], key=lambda a: a["name"] != DENSE)  # dense first
    files, entries = {}, []
    for a in artifacts:
        path = run_dir / a["path"]
        if not path.is_file():
            raise CompressError(f"{path} is missing: run the pipeline again to rewrite it")
        files[a["path"]] = path.read_bytes()
        entries.append({"name": a["name"], "path": a["path"], "input_shape": _input_shape(path)})
    manifest = {"pipeline": report["pipeline"], "artifacts": entries}
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    script = bench_script(
        report["pipeline"],
        verify.get("repetitions", VerifyConfig().repetitions),
        verify.get("rounds", VerifyConfig().rounds),
    )
    files["bench.py"] = script.encode()
    return f"{run_dir.name}-bundle", files


def write_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the bundle of `run_dir` to `out` (.zip or .tar.gz; default next to the run
    folder, `<run>-bundle.zip`); returns its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir.parent / f"{run_dir.name}-bundle.zip"
    if not any(out.name.endswith(suffix) for suffix in FORMATS):
        raise CompressError(f"-o {out}: name a .zip or .tar.gz file")
    folder, files = bundle_files(run_dir)
    with atomic_path(out) as tmp:
        if out.name.endswith(".zip"):
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in files.items():
                    archive.writestr(f"{folder}/{name}", data)
        else:
            with tarfile.open(tmp, "w:gz") as archive:
                for name, data in files.items():
                    info = tarfile.TarInfo(f"{folder}/{name}")
                    info.size, info.mode = len(data), 0o644
                    archive.addfile(info, io.BytesIO(data))
    return out


def read_timings(path: Path) -> dict:
    """A bench.py JSON file, checked enough to show."""
    try:
        timings = read_json(path)
    except (OSError, ValueError) as exc:
        raise CompressError(f"--device-timings {path}: cannot read it ({exc})") from None
    if not isinstance(timings, dict) or timings.get("format") != TIMINGS_FORMAT:
        raise CompressError(f"--device-timings {path}: not a timings file written by bench.py")
    return timings


def device_rows(report: Report, timings: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and cells: per artifact the host's latency against dense's and the device's."""
    device = {row["name"]: row for row in timings["artifacts"]}
    headers = ["artifact", "host p50 ms", "host vs dense", "device p50 ms", "device vs dense"]
    rows = []
    for a in report["artifacts"]:
        d = device.get(a["name"])
        rows.append(
            [
                a["name"],
                _ms(a.get("latency_ms_b1_p50")),
                _ratio(a, "latency_vs_dense"),
                _ms(d and d.get("latency_ms_b1_p50")),
                _ratio(d, "latency_vs_dense") if d else "-",
            ]
        )
    return headers, rows


def device_title(timings: dict) -> str:
    dev = timings["device"]
    return (
        f"device: {dev.get('machine')} {dev.get('processor') or ''} ({dev.get('cpus')} CPUs), "
        f"onnxruntime {timings['onnxruntime']}, {timings['threads']} thread(s), "
        f"{timings['rounds']} rounds"
    ).replace("  ", " ")


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(row: dict, key: str) -> str:
    value, low, high = row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high")
    if value is None:
        return "-"
    return f"{value:.2f}x" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")
