"""Cluster readiness without a cluster: the SLURM profile's plan for the paper grid, and the conda envs."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_snakemake

GPU_RULES = {"pai_mask", "pags_search", "sparse_train", "train_chunk", "lth_dense_round", "lth_round", "early_bird",
             "itop"}
LOCAL_RULES = {"prepare_data", "table", "figure", "lth_summary", "pags_results"}
# import name -> pip distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "PyYAML"}


@pytest.mark.workflow
def test_slurm_profile_puts_every_training_job_on_a_gpu():
    result = run_snakemake(["all", "-n", "--profile", "profiles/slurm"])  # the README's command, nothing more
    jobs = re.findall(r"^(local)?(?:rule|checkpoint) (\w+):\n(.*?)(?=\n\n|\Z)", result.stdout, re.M | re.S)
    seen = set()
    for local, rule, body in jobs:
        resources = re.search(r"resources: (.*)", body)
        resources = resources.group(1) if resources else ""
        if rule in GPU_RULES:
            assert not local and "gpu=1" in resources and "cpus_per_gpu=4" in resources, (rule, resources)
            assert re.search(r"runtime=\d+", resources) and "mem_mb=16000" in resources
            seen.add(rule)
    assert seen >= GPU_RULES - {"pags_search"}  # searches' GPU jobs are planned once their PaI masks exist
    pretrain = [body for local, rule, body in jobs if rule == "pretrain" and "iters=0" not in body]
    assert pretrain and all("gpu=1" in body for body in pretrain)


def test_downloads_tables_figures_and_bookkeeping_run_on_the_login_node():
    block = (ROOT / "Snakefile").read_text().split("localrules:")[1].split("\n\n")[0]
    assert LOCAL_RULES <= {name.strip(" ,") for name in block.split()}


def rule_envs() -> dict[str, tuple[str, str]]:
    """{rule: (conda env file, workflow script)} from the rule files' text."""
    found = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint)\b)", text):
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            name = re.search(r"(?:rule|checkpoint) (\w+):", block) or re.search(r'name:\s*\n\s*"?(\w+)', block)
            script = re.search(r"python -m workflow_scripts\.(\w+)", block)
            if env:
                assert name, f"a rule in {smk.name} has a conda env but no name I can read"
                found[name.group(1)] = (str((smk.parent / env.group(1)).resolve()),
                                        script and f"workflow_scripts/{script.group(1)}.py")
    return found


def third_party_imports(script: Path) -> set[str]:
    """Top-level modules a workflow script needs, following its imports into the fullspectrum package."""
    needed, seen, todo = set(), set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent if node.level == 1 else path.parent.parent
                names = [f"fullspectrum{'.' + str(base.relative_to(ROOT / 'fullspectrum')).replace('/', '.') if base != ROOT / 'fullspectrum' else ''}.{node.module or ''}".rstrip(".")]
                names += [f"{names[0]}.{alias.name}" for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == "fullspectrum":
                    module = ROOT.joinpath(*name.split("."))
                    for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                        if candidate.exists():
                            todo.append(candidate)
                elif top not in sys.stdlib_module_names:
                    needed.add(DISTRIBUTIONS.get(top, top))
    return needed


def env_packages(path: str) -> dict[str, str]:
    spec = yaml.safe_load(Path(path).read_text())
    pins = {}
    for dep in spec["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else [dep]:
            if item.startswith("--"):  # a pip option (the index of torch's CUDA build), not a package
                continue
            name, _, version = item.partition("==") if "==" in item else item.partition("=")
            pins[name.strip()] = version.strip()
    return pins


def test_every_rule_names_an_env_that_pins_everything_its_script_imports():
    envs = rule_envs()
    assert {"pretrain", "pai_mask", "pags_search", "sparse_train", "lth_dense_round", "lth_round", "table", "figure",
            "itop"} <= set(envs)
    for rule, (env, script) in envs.items():
        pins = env_packages(env)
        assert all(pins.values()), f"{env}: every dependency must pin a version, got {pins}"
        if script:
            missing = third_party_imports(ROOT / script) - set(pins)
            assert not missing, f"rule {rule}: {script} imports {missing}, which {Path(env).name} lacks"


def test_env_pins_match_the_python_package_pins():
    pyproject = (ROOT / "pyproject.toml").read_text()
    for env in (ROOT / "envs").glob("*.yaml"):
        for name, version in env_packages(str(env)).items():
            if name not in ("python", "pip"):
                public = version.split("+")[0]  # torch's CUDA build tag (+cu128) is the env's choice, not the version
                assert f'"{name}=={public}"' in pyproject, f"{env.name} pins {name}=={version}, pyproject differs"


def test_the_torch_env_names_its_cuda_build_and_the_readme_the_driver_it_needs():
    spec = yaml.safe_load((ROOT / "envs" / "torch.yaml").read_text())
    pip = next(dep["pip"] for dep in spec["dependencies"] if isinstance(dep, dict))
    index = next(item for item in pip if item.startswith("--extra-index-url"))
    build = re.search(r"/whl/(cu\d+)$", index).group(1)
    assert env_packages(str(ROOT / "envs" / "torch.yaml"))["torch"].endswith(f"+{build}")
    cuda = f"{build[2:-1]}.{build[-1]}"  # cu128 -> 12.8
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"CUDA {re.escape(cuda)}[^\n]*driver[^\n]*\d{{3}}\.\d+", readme), f"README: driver for CUDA {cuda}"
    assert "torch" not in env_packages(str(ROOT / "envs" / "analysis.yaml"))


MACHINE_KEYS = {"cores", "jobs", "resources", "default-resources", "set-resources", "executor", "local-cores",
                "latency-wait", "retries"}


def test_machine_settings_live_in_global_profiles_not_in_the_workflow_profile():
    workflow_profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert not MACHINE_KEYS & set(workflow_profile), "the workflow profile's keys win over any --profile"
    local = yaml.safe_load((ROOT / "profiles" / "local" / "config.yaml").read_text())
    slurm = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert local["resources"] == {"gpu": 1} and "resources" not in slurm and slurm["executor"] == "slurm"


def rule_blocks() -> dict[str, str]:
    """{rule name: its text} of every rule and checkpoint in rules/*.smk."""
    blocks = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint)\b)", smk.read_text()):
            name = re.search(r"(?:rule|checkpoint) (\w+):", block) or re.search(r'name:\s*\n\s*"?(\w+)', block)
            if name and "shell:" in block:
                blocks[name.group(1)] = block
    return blocks


def test_every_rule_declares_threads_passes_them_on_and_gpu_rules_record_a_benchmark():
    blocks = rule_blocks()
    assert GPU_RULES | LOCAL_RULES <= set(blocks)
    for name, block in blocks.items():
        assert re.search(r"\n\s*threads: ", block), f"rule {name} declares no threads"
        if "--device" in block:  # a computing step: torch gets the rule's threads
            assert "--threads {threads}" in block, name
    for name in GPU_RULES:
        assert "benchmark:" in blocks[name], f"GPU rule {name} records no benchmark"
