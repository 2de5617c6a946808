"""The cost plan on a small config whose numbers are worked out by hand below."""

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from fullspectrum import plan

TABLE = {"dataset": "cifar10", "density": 0.25, "models": ["resnet18"], "pretrain_iters": [0],
         "methods": ["snip", "erk"], "baselines": ["lth", "eb"], "paper_table": None}
FIGURE = {"dataset": "cifar10", "model": "resnet18", "seed": 0}
SMALL = {
    "grid": [{"dataset": "cifar10", "models": ["resnet18"], "densities": [0.25], "methods": ["snip", "erk"],
              "pretrain_iters": [0], "seeds": [0], "baselines": ["lth", "eb"]}],
    "train": {"epochs": 10, "batch_size": 100,            # 500 steps per CIFAR epoch
              "members": 1, "mode": "sequential"},         # a job per mask (config.yaml's 16 would chunk them)
    "pai": {"scoring_batches": 50},                        # SNIP's mask: 50/500 = 0.1 epoch
    "search": {"population": 20, "batches": 5, "snapshot_every": 5, "train_cap": 3,  # 1..3 selections
               "snapshot_rule": "changed",  # ERK at 0.25 keeps layers dense: the authors' rule would take exactly 3
               "control": False, "overrides": []},
    "lth": {"prune_fraction": 0.5, "rewind_epoch": 1, "round_epochs": 4},          # 0.5, 0.25: 2 rounds
    "early_bird": {"epochs": 6},
    "itop": {"epochs": 2, "update_frequency": 400, "snapshot_every": 1},          # steps 0, 400, 800: 3 tickets
    "tables": {"table1": TABLE, "table2": TABLE, "table3": TABLE},               # the same runs three times
    "figures": {"fig1": FIGURE, "fig2": FIGURE},                                  # the same ITOP run twice
    "resources": {"minutes_per_epoch": {"resnet18": 1.0, "resnet34": 2.0},
                  "seconds_per_candidate": {"resnet18": 6.0, "resnet34": 6.0}},
}
# By hand, in minutes (1 per epoch): SNIP mask 0.1, its search 20 x (5/500 + 0.1) = 2.2; ERK mask 0, search
# 20 x 0.1 = 2.0; each PaI run trains its mask (10) and 1..3 selections (10..30); LTH 2 rounds x 4 + ticket 10;
# EB 6 + ticket 10. A table: 58.3 + 20..60 = 78.3..118.3 min. The longest chain is LTH: 8 + 10 = 18 min.
# The figure: ITOP 2 + 3 tickets x 10 = 32 min, chain 2 + 10 = 12 min.


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return path


def test_a_small_grid_costs_what_is_worked_out_by_hand(small):
    out = plan.plan(plan.merged_config([str(small)]), gpus=2)
    table, figure, total = out["table1"], out["fig1"], out["total"]
    assert out["table2"] == out["table3"] == table and out["fig2"] == figure
    assert table.jobs_per_rule == {
        "pretrain": plan.exact(1), "pai_mask": plan.exact(2), "pags_search": plan.exact(2),
        "sparse_train": plan.Span(6, 10), "pags_results": plan.exact(2),
        "lth_dense_round": plan.exact(1), "lth_round": plan.exact(1), "lth_summary": plan.exact(1),
        "early_bird": plan.exact(1), "table": plan.exact(1)}
    assert table.trainings == plan.Span(9, 13) and table.epochs == plan.Span(74, 114)
    assert table.gpu_hours.lo == pytest.approx(78.3 / 60) and table.gpu_hours.hi == pytest.approx(118.3 / 60)
    assert table.wall_hours.lo == pytest.approx(78.3 / 2 / 60) and table.wall_hours.hi == pytest.approx(118.3 / 2 / 60)
    assert figure.trainings == plan.exact(4) and figure.epochs == plan.exact(32)
    assert figure.wall_hours.lo == pytest.approx(16 / 60)  # 32 min on 2 GPUs; the chain (12 min) is shorter
    # shared runs once: one table's jobs plus the figure's, three table jobs, two figure jobs, one dataset
    assert total.trainings == plan.Span(13, 17) and total.epochs == plan.Span(106, 146)
    assert total.gpu_hours.lo == pytest.approx(110.3 / 60) and total.gpu_hours.hi == pytest.approx(150.3 / 60)
    assert total.jobs_per_rule["table"] == plan.exact(3) and total.jobs_per_rule["figure"] == plan.exact(2)
    assert total.jobs_per_rule["itop"] == plan.exact(1) and total.jobs_per_rule["sparse_train"] == plan.Span(9, 13)
    assert total.jobs_per_rule["prepare_data"] == plan.exact(1) and total.jobs_per_rule["pretrain"] == plan.exact(1)


def test_on_many_gpus_the_longest_chain_bounds_the_wall_clock(small):
    total = plan.plan(plan.merged_config([str(small)]), gpus=1000)["total"]
    assert total.wall_hours == plan.exact(18 / 60)  # LTH's rounds, then its ticket


def test_the_cli_prints_every_table_and_the_total(small):
    result = subprocess.run([sys.executable, "-m", "fullspectrum.plan", "--configfile", str(small), "--gpus", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    head, table, notes = result.stdout.split("\n\n")
    assert "one job per mask (train.members 1)" in head
    rows = table_rows(table)
    assert set(rows) == {"table1", "table2", "table3", "fig1", "fig2", "total"}
    assert rows["total"][1:5] == ["13..17", "106..146", "1.8..2.5*", "0.9..1.3*"]  # * nobody measured the rates
    # SLURM jobs: pretrain 1, pai_mask 2, pags_search 2, sparse_train 9..13, LTH 2 rounds, EB 1, ITOP 1; not the
    # local pags_results, lth_summary, table, figure, prepare_data
    assert rows["total"][5] == "18..22"
    assert max(len(line) for line in table.splitlines()) <= plan.REPORT_WIDTH
    assert "resources.minutes_per_epoch.resnet18 = 1.0, not measured" in notes
    assert "benchmarks/train_step.py --device cuda --width 64 --model resnet18" in notes
    assert "resources.seconds_per_candidate.resnet18 = 6.0, not measured" in notes and "benchmarks/pags.py" in notes
    assert "resnet34" not in notes  # the small grid has no ResNet34: its values cost nothing


def with_measured(small, tmp_path, measured: dict) -> dict:
    config = yaml.safe_load(small.read_text())
    config["resources"]["measured"] = measured
    path = tmp_path / "measured.yaml"
    path.write_text(yaml.safe_dump(config))
    return plan.merged_config([str(path)])


def table_rows(table: str) -> dict[str, list[str]]:
    """The report's table by row name (its jobs per rule wrap onto indented lines, left out)."""
    return {line.split()[0]: line.split() for line in table.splitlines()[1:] if not line.startswith(" ")}


def marked_rows(config: dict) -> dict[str, bool]:
    text = plan.report(plan.plan(config, gpus=2), 2, config)
    rows = table_rows(text.split("\n\n")[1])
    return {name: row[3].endswith("*") and row[4].endswith("*") for name, row in rows.items()}


def test_only_the_costs_that_rest_on_an_unmeasured_value_are_marked(small, tmp_path):
    # the rate per epoch measured, not the search's per-candidate seconds: the tables search, the figures do not
    config = with_measured(small, tmp_path, {"minutes_per_epoch": {"resnet18": "A100, benchmarks/train_step.py"}})
    assert marked_rows(config) == {"table1": True, "table2": True, "table3": True, "fig1": False, "fig2": False,
                                   "total": True}
    notes = plan.report(plan.plan(config, gpus=2), 2, config).split("\n\n")[2]
    assert "seconds_per_candidate.resnet18" in notes and "minutes_per_epoch" not in notes.split("e.g.")[0]
    everything = with_measured(small, tmp_path, {"minutes_per_epoch": {"resnet18": "A100"},
                                                 "seconds_per_candidate": {"resnet18": "A100"}})
    assert not any(marked_rows(everything).values())
    assert "not measured" not in plan.report(plan.plan(everything, gpus=2), 2, everything)


def test_the_schema_accepts_where_a_value_was_measured():
    import jsonschema
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["resources"]["measured"] = {"minutes_per_epoch": {"resnet18": "H100, benchmarks/train_step.py"}}
    jsonschema.validate(config, schema)
    config["resources"]["measured"] = {"minutes_per_epoch": {"resnet18": 0.4}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def table1_with_search(small, tmp_path, key):
    """Table 1's plan for the small config with `search.<key>` switched on."""
    config = yaml.safe_load(small.read_text())
    config["search"][key] = True
    path = tmp_path / f"{key}.yaml"
    path.write_text(yaml.safe_dump(config))
    return plan.plan(plan.merged_config([str(path)]), gpus=2)["table1"]


def test_the_control_doubles_the_selected_trainings(small, tmp_path):
    table = table1_with_search(small, tmp_path, "control")
    assert table.jobs_per_rule["sparse_train"] == plan.Span(2 + 2 * 2 + 2, 2 + 2 * 6 + 2)  # PaI + 2x(1..3) + tickets


def test_equal_density_adds_up_to_the_snapshots_of_score_based_methods_only(small, tmp_path):
    table = table1_with_search(small, tmp_path, "equal_density")
    # SNIP: 1..3 selections + 0..3 equal-density masks; ERK: 1..3 selections (they never drift)
    assert table.jobs_per_rule["sparse_train"] == plan.Span(2 + 2 + 2, 2 + 6 + 3 + 2)  # PaI + ... + tickets


def test_an_erk_search_with_a_dense_layer_saves_every_time_under_the_authors_rule():
    """ERK keeps a layer dense -> that layer is redrawn identical to the best's in every candidate -> the authors'
    `>=` accepts it -> a snapshot at every sampling point: exactly population / snapshot_every."""
    config = plan.merged_config([])
    costs = plan.Costs(config)
    from fullspectrum import workflow as wf
    cifar = wf.Run("cifar10", "resnet18", 0.01, "erk", 100, 0)  # sampling-100: 3000 / 100 = 30 at most
    assert costs.selections(cifar) == plan.Span(1, 30)  # the 100-way head at 0.01: no ERK layer is dense
    config["model_head"] = {}  # a 10-way head: ERK keeps the 512x10 classifier dense
    assert costs.selections(cifar) == plan.exact(30)
    config["search"]["snapshot_rule"] = "changed"
    assert costs.selections(cifar) == plan.Span(1, 30)
    config["search"]["snapshot_rule"] = "authors"
    assert costs.selections(wf.Run("cifar10", "resnet18", 0.01, "snip", 100, 0)) == plan.Span(1, 300)


@pytest.mark.parametrize("model", ["resnet18", "resnet34"])
def test_the_plans_shapes_and_erk_dense_layers_match_the_models(model):
    from fullspectrum import models, pruning
    from fullspectrum.masks import prunable_parameters
    for width, outputs in ((8, 10), (8, 100), (64, 10), (64, 100)):
        shapes = {k: tuple(v.shape) for k, v in prunable_parameters(models.build(model, outputs, width)).items()}
        assert plan.resnet_shapes(model, width, outputs) == shapes
        for density in (0.01, 0.08, 0.2):
            dense = [k for k, d in pruning.erk_layer_densities(shapes, density).items() if d == 1.0]
            assert plan.erk_dense_layers(shapes, density) == dense
    assert plan.erk_dense_layers(plan.resnet_shapes(model, 64, 10), 0.01) == ["linear.weight"]
    assert plan.erk_dense_layers(plan.resnet_shapes(model, 64, 100), 0.01) == []


# Many masks per job. The figure with itop.update_frequency 100: 1,000 ITOP steps, updates at 100..900, so 10 tickets
# (steps 0, 100, ..., 900), 10 min each; the ITOP run itself 2 epochs = 2 min; pretraining @0 costs nothing.
TEN_TICKETS = {"itop": {"update_frequency": 100}}


def config_with(small, tmp_path, overlay: dict) -> dict:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return plan.merged_config([str(small), str(path)])


def test_members_1_is_a_job_per_mask(small, tmp_path):
    fig = plan.plan(config_with(small, tmp_path, {**TEN_TICKETS, "train": {"members": 1}}), gpus=1000)["fig1"]
    assert fig.jobs_per_rule == {"pretrain": plan.exact(1), "itop": plan.exact(1), "sparse_train": plan.exact(10),
                                 "figure": plan.exact(1)}
    assert fig.trainings == plan.exact(11) and fig.epochs == plan.exact(102)
    assert fig.gpu_hours == plan.exact(102 / 60)
    assert fig.wall_hours == plan.exact(12 / 60)  # ITOP 2, then one ticket 10
    assert fig.slurm_jobs == plan.exact(12)  # pretrain, itop, 10 sparse_train; the figure is local


def test_members_4_trains_10_tickets_in_3_jobs(small, tmp_path):
    config = config_with(small, tmp_path, {**TEN_TICKETS, "train": {"members": 4}})
    fig = plan.plan(config, gpus=2)["fig1"]
    assert fig.jobs_per_rule == {"pretrain": plan.exact(1), "itop": plan.exact(1), "train_chunk": plan.exact(3),
                                 "chunk_member": plan.exact(10), "figure": plan.exact(1)}  # 4 + 4 + 2
    assert fig.trainings == plan.exact(11) and fig.epochs == plan.exact(102)  # masks, not jobs
    assert fig.gpu_hours == plan.exact(102 / 60)  # sequential: the same GPU time as a job per mask
    assert fig.wall_hours == plan.exact(51 / 60)  # 102 min on 2 GPUs; the chain 2 + 40 is shorter
    assert fig.slurm_jobs == plan.exact(5)  # pretrain, itop, 3 chunks; chunk_member and figure are local


def test_fused_with_speedup_2_halves_the_chunks_gpu_minutes(small, tmp_path):
    config = config_with(small, tmp_path, {**TEN_TICKETS, "train": {"members": 4, "mode": "fused"},
                                           "resources": {"fused_speedup": 2.0}})
    fig = plan.plan(config, gpus=1000)["fig1"]
    assert fig.jobs_per_rule["train_chunk"] == plan.exact(3) and fig.trainings == plan.exact(11)
    assert fig.epochs == plan.exact(102)  # epochs trained do not change
    assert fig.gpu_hours == plan.exact((2 + 100 / 2) / 60)  # ITOP 2 + 10 tickets x 10 / 2
    assert fig.wall_hours == plan.exact((2 + 4 * 10 / 2) / 60)  # ITOP, then the longest chunk: 4 tickets at once


def test_the_chain_ends_with_the_longest_chunk(small, tmp_path):
    """Members 4, each search selecting 1..3: its PaI baseline and selections train in one chunk of 2..4 masks,
    20..40 min. SNIP's chain: mask 0.1 + search 2.2 + 20..40; ERK's 2.0 + 20..40; LTH's 8 + 10 = 18; the figure's
    ITOP 2 + 3 tickets in one chunk 30."""
    out = plan.plan(config_with(small, tmp_path, {"train": {"members": 4}}), gpus=1000)
    table, fig = out["table1"], out["fig1"]
    assert table.jobs_per_rule["train_chunk"] == plan.exact(2)  # one per search, its PaI baseline with it
    assert table.jobs_per_rule["chunk_member"] == plan.Span(4, 8)
    assert table.jobs_per_rule["sparse_train"] == plan.exact(2)  # the LTH and EB tickets
    assert table.trainings == plan.Span(9, 13) and table.epochs == plan.Span(74, 114)  # as with a job per mask
    assert table.wall_hours.lo == pytest.approx(22.3 / 60) and table.wall_hours.hi == pytest.approx(42.3 / 60)
    assert fig.wall_hours == plan.exact(32 / 60)
    # pretrain 1, pai_mask 2, pags_search 2, train_chunk 2 + 1 (the tickets), sparse_train 2, LTH 1 + 1, EB 1, ITOP 1
    assert out["total"].slurm_jobs == plan.exact(1 + 2 + 2 + 3 + 2 + 2 + 1 + 1)


def test_chunk_minutes(small, tmp_path):
    sequential = plan.Costs(config_with(small, tmp_path, {"train": {"members": 4}}))
    assert sequential.chunk_minutes("resnet18", 10, 4) == 40  # 4 x 10 epochs x 1 min, one after another
    assert sequential.chunk_minutes("resnet34", 10, 3) == 60  # 3 x 10 x 2 min
    fused = plan.Costs(config_with(small, tmp_path, {"train": {"members": 4, "mode": "fused"},
                                                     "resources": {"fused_speedup": 2.0}}))
    assert fused.chunk_minutes("resnet18", 10, 4) == 20
    assert fused.chunk_minutes("resnet34", 10, 3) == 30
    assert fused.chunk_minutes("resnet18", 10, 1) == 10  # a chunk of one trains one model: no faster than alone
    slower = plan.Costs(config_with(small, tmp_path, {"train": {"members": 4, "mode": "fused"},
                                                      "resources": {"fused_speedup": 0.5}}))
    assert slower.chunk_minutes("resnet18", 10, 4) == 80


RATES_MEASURED = {"minutes_per_epoch": {"resnet18": "A100"}, "seconds_per_candidate": {"resnet18": "A100"}}


def test_an_unmeasured_fused_speedup_marks_what_rests_on_it(small, tmp_path):
    fused = {"train": {"members": 4, "mode": "fused"}, "resources": {"measured": RATES_MEASURED}}
    config = config_with(small, tmp_path, fused)
    assert all(marked_rows(config).values())  # every table and figure trains chunks
    text = plan.report(plan.plan(config, gpus=2), 2, config)
    assert "up to 4 masks per job (train.members), trained at once, fused, x1.00 speed-up" in text
    notes = text.split("\n\n")[2]
    assert "resources.fused_speedup = 1.0, not measured" in notes and "benchmarks/gpu_check.sh" in notes
    assert "benchmarks/fused_train.py --device cuda --width 64" in notes
    measured = config_with(small, tmp_path, {**fused, "resources": {
        "measured": {**RATES_MEASURED, "fused_speedup": "H100 80GB, benchmarks/fused_train.py"}}})
    assert not any(marked_rows(measured).values())
    for other in ({"train": {"members": 4, "mode": "sequential"}}, {"train": {"members": 1, "mode": "fused"}}):
        config = config_with(small, tmp_path, {**other, "resources": {"measured": RATES_MEASURED}})
        assert not any(marked_rows(config).values())  # the speed-up is used only by fused chunks
    text = plan.report(plan.plan(config, gpus=2), 2, config)
    assert "one job per mask (train.members 1)" in text and "fused_speedup" not in text


def test_the_schema_accepts_where_fused_speedup_was_measured():
    import jsonschema
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["resources"]["measured"] = {"fused_speedup": "H100 80GB, benchmarks/fused_train.py"}
    jsonschema.validate(config, schema)
    config["resources"]["measured"] = {"fused_speedup": 2.0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
