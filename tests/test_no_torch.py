"""The tables and figures code imports without torch, so its env (envs/analysis.yaml) installs none."""

import subprocess
import sys

from conftest import ROOT

ANALYSIS_MODULES = ("fullspectrum.analysis.tables", "fullspectrum.analysis.figures", "fullspectrum.analysis.collect",
                    "fullspectrum.analysis.stats", "fullspectrum.analysis.readout",
                    "fullspectrum.summary", "fullspectrum.plan", "fullspectrum.workflow", "fullspectrum.code_version",
                    "workflow_scripts.make_table", "workflow_scripts.figure", "workflow_scripts.collect_results",
                    "fullspectrum.analysis.study", "workflow_scripts.study", "fullspectrum.chunk_files",
                    "workflow_scripts.chunk_member")


def test_the_analysis_modules_import_with_torch_unavailable():
    # A finder that refuses torch: every `import torch` (direct or inside another module) raises ImportError, and
    # sys.modules holds no torch entry, as on a machine without it (scipy looks there for array libraries)
    code = ("import sys\nclass NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, NoTorch())\nimport importlib\n"
            f"for name in {ANALYSIS_MODULES!r}:\n    importlib.import_module(name)\n"
            "print('imported', len(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-3000:]
    blocked = subprocess.run([sys.executable, "-c", code.replace("import importlib", "import fullspectrum.train")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert blocked.returncode != 0 and "torch" in blocked.stderr  # the control: the shim does block torch
