"""benchmarks/gpu_check.py without CUDA and without faiss (as on a CPU machine, or a GPU machine lacking faiss):
the CUDA parts are skipped and say so, the CPU-side checks pass, and the README section follows its rules."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# faiss hidden: `import faiss` raises ImportError, as where it is not installed
HIDE_FAISS = ("import runpy, sys; sys.modules['faiss'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "figures.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", HIDE_FAISS, str(SCRIPT), "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_cuda_parts_are_skipped_and_said_so(cpu_run):
    rep, stdout = cpu_run
    assert rep["meta"]["cuda"] is False and rep["meta"]["quick"] is True
    assert "NO CUDA -- every CUDA part is skipped" in stdout
    for part in ("extract", "prototypes", "odin", "knn", "decode"):
        assert any(s.startswith(f"{part}:") and "(no CUDA)" in s for s in rep["skipped"]), part
    assert "knn: faiss is not installed: faiss (GPU) not checked" in rep["skipped"]
    assert not any("cuda" in c["name"].lower() for c in rep["checks"])
    assert rep["speed"] == []  # every speed figure is a CUDA one


def test_cpu_checks_pass(cpu_run):
    rep, _ = cpu_run
    assert {c["part"] for c in rep["checks"]} == {"extract", "prototypes", "knn", "decode"}
    assert all(c["passed"] for c in rep["checks"]), [c for c in rep["checks"] if not c["passed"]]
    (knn,) = [c for c in rep["checks"] if c["part"] == "knn"]
    assert "torch backend on CPU" in knn["name"] and knn["value"] <= knn["bound"] == 1e-4


def test_exact_scores_and_check_verdicts():
    gc = load_script()
    bank, queries = gc.unit_rows(300, 8, 0), gc.unit_rows(20, 8, 1)
    dist = np.sqrt(((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1))
    np.testing.assert_allclose(gc.exact_scores(bank, queries, 5, block=64), -np.sort(dist, 1)[:, 4], atol=1e-12)
    rep = gc.Report()
    rep.check("p", "over", 2e-4, "<=", 1e-4)
    rep.check("p", "under", 0.5, ">=", 0.9)
    rep.check("p", "ok", 1e-5, "<=", 1e-4)
    assert [c["passed"] for c in rep["checks"]] == [False, False, True]


def test_readme_section_never_replaces_gpu_figures(cpu_run):
    gc = load_script()
    rep, _ = cpu_run
    placeholder = gc.render_section(rep)
    assert "Not yet run on a GPU" in placeholder and gc.GPU_MARK not in placeholder
    gpu = {**rep, "meta": {**rep["meta"], "cuda": True}}
    section = gc.render_section(gpu)
    assert gc.GPU_MARK in section and "| part | check | value | tolerance | result |" in section
    readme = f"# B\n\n<!-- gpu_check:start -->\n{section}\n<!-- gpu_check:end -->\n"
    assert not gc.may_write(readme, rep)  # a run without CUDA keeps the GPU figures
    assert gc.may_write(readme, gpu) and gc.may_write(readme.replace(section, placeholder), rep)
