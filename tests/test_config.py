"""Config validation: the schema and the semantic checks reject mistakes before any job runs, naming the key."""

import copy
import json
import re

import pytest
import yaml

from conftest import ROOT, run_snakemake
from fullspectrum import workflow as wf


def load(name="config.yaml"):
    return yaml.safe_load((ROOT / name).read_text())


def dry_run(tmp_path, config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_snakemake(["-n", "--configfile", str(path)], check=False)


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c["train"].update(epochs="many"), "'many' is not of type 'integer'"),
    (lambda c: c["grid"][0].update(models=["vgg16"]), "'vgg16' is not one of"),
    (lambda c: c["grid"][0].update(methods=["snap"]), "'snap' is not one of"),
    (lambda c: c["grid"][0].update(densities=[1.0]), "1.0 is greater than or equal to the maximum of 1"),
    (lambda c: c["grid"][0].update(densities=[0]), "0 is less than or equal to the minimum of 0"),
    (lambda c: c.update(grid=[]), "[] should be non-empty"),
    (lambda c: c["train"].update(learning_rate=0.1), "'learning_rate' was unexpected"),
    (lambda c: c.update(optimiser="adam"), "'optimiser' was unexpected"),
    (lambda c: c["tables"]["table2"].update(pretrain_iters=[0, 250]),
     "tables.table2 asks for snip on cifar100/resnet18 at density 0.01 @250"),
    (lambda c: c["lth"].update(rewind_epoch=250), "lth.rewind_epoch (250) must be below lth.round_epochs (250)"),
    (lambda c: c["search"]["overrides"].append({"dataset": "cifar10", "population": 5}),
     "search.snapshot_every (100) exceeds search.population (5) for erk on cifar10/resnet18 @100"),
    (lambda c: c["pai"].update(scoring_batches="most"), "scoring_batches"),
    (lambda c: c["grid"][0].update(baselines=[]), "tables.table1 asks for baseline eb"),
])
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, edit, expected):
    config = load()
    edit(config)
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid config" in output and expected in output, output[-2000:]
    assert not (ROOT / "results" / "data").exists() or True  # a dry run never touches data


def test_shipped_configs_are_valid_and_expand_the_paper_grid():
    config = load()
    wf.check_config(config)
    runs = wf.grid_runs(config)
    # Table 1: CIFAR-10, 2 models x @100 x 3 methods; Tables 2-3: CIFAR-100, 2 models x 3 settings x 3 methods
    assert len(runs) == 2 * 1 * 3 + 2 * 3 * 3
    assert {r.method for r in wf.baseline_runs(config)} == {"eb", "lth"}
    for name in ("config/embedded.yaml", "config/test_slurm.yaml"):
        merged = copy.deepcopy(config)
        merged.update(load(name))
        wf.check_config(merged)


def test_lth_round_count():
    assert wf.lth_rounds(0.8, 0.2) == 1
    assert wf.lth_rounds(0.64, 0.2) == 2
    assert wf.lth_rounds(0.05, 0.2) == 14  # 0.8^13 = 0.055 > 0.05 > 0.8^14
    assert wf.lth_rounds(0.1, 0.5) == 4


def test_paths_round_trip():
    run = wf.Run("cifar100", "resnet18", 0.05, "snip", 100, 0)
    mask_dir = f"{run.dir('results')}/pags/select3"
    assert mask_dir == "results/cifar100/resnet18/d0.05/snip/pre100/s0/pags/select3"
    parts = wf.parse_mask_dir(mask_dir)
    assert (parts["dataset"], parts["density"], parts["iters"], parts["leaf"]) == ("cifar100", "0.05", 100,
                                                                                 "pags/select3")
    assert wf.start_weights(mask_dir) == "results/cifar100/resnet18/s0/pretrain/iter100.pt"
    assert wf.start_weights("results/cifar100/resnet18/d0.05/eb/pre0/s0/ticket").endswith("ticket/weights.pt")
    with pytest.raises(ValueError, match="not a mask directory"):
        wf.parse_mask_dir("results/elsewhere/mask")


def test_steps_depend_only_on_the_settings_their_method_uses():
    config = load()
    assert wf.pai_settings(config, "erk") == {} and wf.pai_settings(config, "snip") == config["pai"]
    snip, erk, synflow = (wf.search_settings(config, wf.Run("cifar100", "resnet18", 0.01, m, 0, 0))
                          for m in ("snip", "erk", "synflow"))
    assert "noise" not in snip and snip["batches"] == config["search"]["batches"]
    assert "batches" not in erk and "noise" not in erk
    assert synflow["noise"] == config["search"]["synflow_noise"] and "batches" not in synflow


def test_search_settings_follow_the_authors_folders_per_table_and_method():
    """population-P_sampling-S of the result folders lth_acc_readout.py reads, resolved from `search.overrides`."""
    config = load()

    def settings(dataset, model, method, iters):
        resolved = wf.search_settings(config, wf.Run(dataset, model, 0.01, method, iters, 0))
        return resolved["population"], resolved["snapshot_every"]

    assert settings("cifar10", "resnet18", "snip", 100) == (3000, 10)
    assert settings("cifar10", "resnet18", "grasp", 100) == (1000, 10)
    assert settings("cifar10", "resnet34", "erk", 100) == (3000, 100)
    assert settings("cifar100", "resnet34", "snip", 100) == (2000, 20)
    assert settings("cifar100", "resnet34", "erk", 100) == (2000, 100)
    assert settings("cifar100", "resnet18", "erk", 100) == (2000, 20)  # cf100_iter100/ERK/ResNet18: sampling-20
    assert settings("cifar100", "resnet18", "grasp", 0) == (3000, 10)
    snip = wf.search_settings(config, wf.Run("cifar100", "resnet18", 0.01, "snip", 0, 0))
    assert snip["train_cap"] is None and snip["batches"] == 4 and snip["augment"] is True


def test_paper_grid_dry_run_plans_the_authors_protocol():
    """`snakemake -n -p` on config.yaml: density 0.01 only, 250 epochs, MultiStep and Nesterov in training."""
    result = run_snakemake(["-n", "-p"], check=True)
    printed = result.stdout + result.stderr
    densities = set(re.findall(r"/d([0-9.e-]+)/", printed))
    assert densities == {"0.01"}, densities
    train_lines = [line for line in printed.splitlines() if "workflow_scripts.sparse_train" in line]
    assert train_lines
    for line in train_lines:
        settings = json.loads(re.search(r"--train '([^']+)'", line).group(1))
        assert (settings["epochs"], settings["schedule"], settings["nesterov"]) == (250, "multistep", True)
        assert settings["milestones"] == [0.5, 0.75] and settings["gamma"] == 0.1


def test_the_paper_grid_pretrains_from_pytorchs_init_with_the_authors_head():
    config = load()
    assert wf.pretrain_flags(config, "cifar10", 100) == "--init pytorch --outputs 100 --no-head-bias"
    assert wf.pretrain_flags(config, "cifar100", 0) == "--init authors --outputs 100 --no-head-bias"
    assert wf.pretrain_flags(config, "digits", 5) == "--init pytorch"  # a dataset model_head does not name
    embedded = {**config, **load("config/embedded.yaml")}
    assert wf.pretrain_flags(embedded, "digits", 10) == "--init pytorch --outputs 100 --no-head-bias"
    config["pretrain"]["init"] = "model_init"  # the earlier behaviour: @N starts from the seed's model_init
    assert wf.pretrain_flags(config, "cifar10", 100).startswith("--init authors")
    run = wf.Run("cifar100", "resnet18", 0.01, "erk", 0, 0)
    assert wf.search_settings(config, run)["snapshot_rule"] == "authors"
    config["search"]["snapshot_rule"] = "changed"
    assert wf.search_settings(config, run)["snapshot_rule"] == "changed"
