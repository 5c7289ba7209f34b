"""The benchmark's table (bench/results.py) on made-up numbers: no training, no timing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_results", Path(__file__).resolve().parent.parent / "bench" / "results.py"
)
results = sys.modules["bench_results"] = importlib.util.module_from_spec(
    _spec
)  # dataclasses look it up
_spec.loader.exec_module(results)

MACHINE = {
    "cpu": "Test CPU 9000",
    "cores": 2,
    "usable_cores": 2,
    "torch_threads": 2,
    "load_average": [0.5, 0.4, 0.3],
    "gpu": "not available",
    "thread_env": {"OMP_NUM_THREADS": "1"},
    "platform": "Linux",
    "python": "3.11.0",
    "torch": "2.4.0",
    "torchvision": "0.19.0",
    "onnxruntime": "1.18.0",
}


def fake_rows() -> list:
    Row = results.Row
    return [
        Row("train epoch", 1.0, "s", 9.5, 9.5, fmt="{:.2f}", target=">= 4x", passed=True),
        Row(
            "train step with L1",
            1.2,
            "ms",
            1.0,
            0.2,
            ratio_fmt="{:+.1%}",
            target="<= +15%",
            passed=False,
        ),
        Row("  stage train", 7.25, "s", fmt="{:.1f}"),
        Row("train epoch on cuda", None, note="GPU not available (skipped)"),
    ]


def test_the_text_table_shows_the_machine_and_every_row_with_its_result():
    text = results.format_text(MACHINE, fake_rows())
    assert (
        "Test CPU 9000, 2 cores" in text
        and "OMP_NUM_THREADS=1" in text
        and "onnxruntime 1.18.0" in text
    )
    lines = {
        r.figure.strip(): next(x for x in text.splitlines() if x.startswith(r.figure))
        for r in fake_rows()
    }
    assert (
        "1.00 s" in lines["train epoch"]
        and "9.50 s" in lines["train epoch"]
        and "9.50x" in lines["train epoch"]
    )
    assert lines["train epoch"].split()[-1] == "pass"
    assert "+20.0%" in lines["train step with L1"] and "FAIL" in lines["train step with L1"]
    assert "7.2 s" in lines["stage train"]  # no baseline, ratio or target: dashes
    assert (
        "skipped" in lines["train epoch on cuda"]
        and "GPU not available" in lines["train epoch on cuda"]
    )


@pytest.mark.parametrize(
    ("passed", "value", "expected"),
    [(True, 1.0, "pass"), (False, 1.0, "FAIL"), (None, 1.0, "-"), (None, None, "skipped")],
)
def test_a_row_result_says_pass_fail_or_skipped(passed, value, expected):
    assert results.Row("x", value, passed=passed).result == expected


def test_json_and_markdown_hold_the_same_rows(tmp_path):
    rows = fake_rows()
    json_path, md_path = results.write_outputs(tmp_path / "out", MACHINE, {"repeats": 3}, rows)
    data = json.loads(json_path.read_text())
    assert data["machine"]["cpu"] == "Test CPU 9000" and data["settings"] == {"repeats": 3}
    assert [r["figure"] for r in data["rows"]] == [r.figure for r in rows]
    assert [r["result"] for r in data["rows"]] == ["pass", "FAIL", "-", "skipped"]
    table = [line for line in md_path.read_text().splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert table[1].count("---") == len(results.HEADERS)


def test_median_of_odd_and_even_counts():
    assert results.median([3.0, 1.0, 2.0]) == 2.0
    assert results.median([4.0, 1.0, 2.0, 3.0]) == 2.5


def _speedup_module():
    bench = str(Path(__file__).resolve().parent.parent / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)  # speedup.py imports results as the benchmark does
    spec = importlib.util.spec_from_file_location("bench_speedup", Path(bench) / "speedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speedup_rows_compare_every_artifact_with_dense_and_hold_the_1_1x_target():
    speedup = _speedup_module()
    timings = {
        "dense": (0.100, 0.120),
        "pruned-int4-packed": (0.105, 0.130),
        "pruned-int4-static": (0.800, 1.0),
        "fast": (0.025, 0.030),
    }
    rows = speedup.rows_from_timings("lenet5", timings)
    assert [r.figure.split(": ")[1] for r in rows] == [
        "pruned-int4-packed",
        "pruned-int4-static",
        "fast",
    ]
    packed, static, fast = rows
    assert packed.ratio == pytest.approx(0.100 / 0.105) and packed.passed  # within 1.1x dense
    assert static.ratio == pytest.approx(0.125) and static.passed is False
    assert fast.ratio == pytest.approx(4.0) and fast.baseline == 0.100 and fast.value == 0.025
    assert all("interleaved" in r.note for r in rows)


def test_speedup_is_measured_for_every_artifact_of_a_run_folder(pruned_export, tiny_data, tmp_path):
    import shutil

    speedup = _speedup_module()
    for name in ("dense", "pruned"):
        shutil.copy(pruned_export.path, tmp_path / f"{name}.onnx")
    report = {"artifacts": [{"name": n, "path": f"{n}.onnx"} for n in ("dense", "pruned")]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    rows = speedup.speedup_rows(
        tmp_path, tiny_data.images["test"][:8].numpy(), repetitions=20, rounds=4
    )
    assert len(rows) == 1 and rows[0].value > 0 and 0.2 < rows[0].ratio < 5  # the same file twice


def test_the_independent_timer_prints_every_file_against_dense(tmp_path, monkeypatch, capsys):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def matmul_file(name: str, width: int) -> str:
        w = numpy_helper.from_array(np.ones((16, width), np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
            [w],
        )
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return str(path)

    dense, small = matmul_file("dense", 512), matmul_file("small", 8)
    spec = importlib.util.spec_from_file_location(
        "independent_latency",
        Path(__file__).resolve().parent.parent / "bench" / "independent_latency.py",
    )
    timer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timer)
    monkeypatch.setattr(sys, "argv", ["t", dense, small, "--calls", "50", "--warmup", "5"])
    timer.main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("1.000x dense")
    assert lines[1].startswith(f"{small}: ") and lines[1].endswith("x dense")
