"""Quality against training time, measured once for `bench --quality` and tools/recipe.py alike."""

import pytest
import torch

from ddpm_lib import bench
from ddpm_lib.bench import QualityMark, minutes_to_quality, quality_during_training
from ddpm_lib.metrics import DigitClassifier, Evaluation, gaussian_stats
from tools.recipe import measure


@pytest.fixture
def judge():
    """An untrained classifier and a reference of random features: the scores' values do not matter here."""
    torch.manual_seed(0)
    return DigitClassifier().eval(), gaussian_stats(torch.randn(300, DigitClassifier.feature_dim, dtype=torch.float64))


@pytest.mark.slow  # a real (tiny) training run on MNIST
def test_each_mark_is_measured_on_one_continuing_run(tiny_config, judge):
    config = tiny_config(train_subset=256, batch_size=64)  # 4 steps per epoch
    points = list(quality_during_training(config, [3, 6], "steps", 4, *judge, etas=(0.0, 1.0)))
    assert [(p.mark, p.steps, p.epochs, p.eta) for p in points] == [
        (3, 3, 0.75, 0.0),
        (3, 3, 0.75, 1.0),
        (6, 6, 1.5, 0.0),
        (6, 6, 1.5, 1.0),
    ]
    assert points[0].train_seconds == points[1].train_seconds  # both samplers judge the same weights
    assert points[0].scores.fid != points[1].scores.fid  # ... and drew different digits: eta reached the sampler
    assert 0 < points[0].train_seconds < points[2].train_seconds  # the clock runs on: one run, not one per mark
    assert all(p.scores.n == 4 for p in points)


def test_an_unknown_kind_of_mark_is_refused(tiny_config, judge):
    with pytest.raises(ValueError, match="by must be 'minutes' or 'steps'"):
        next(quality_during_training(tiny_config(), [1], "epochs", 4, *judge))


def fake_run(confident_at_each_mark: list[float], asked: list, model: torch.nn.Module | None = None):
    """quality_during_training as a script: the marks it is asked for are recorded, the scores (and the network) are given."""

    def run(config, marks, by, n, classifier, reference, seed=1, etas=(0.0,)):
        asked.extend(marks)
        for mark, confident in zip(marks, confident_at_each_mark):
            for eta in etas:
                yield QualityMark(mark, steps=100 * mark, epochs=mark, train_seconds=60 * mark, eta=eta,
                                  scores=Evaluation(n=n, fid=1.0, confident=confident, class_fractions=[0.1] * 10),
                                  model=model)  # fmt: skip

    return run


@pytest.mark.parametrize("confident, expected", [([0.5, 0.95, 0.97, 0.99], 10), ([0.1, 0.2, 0.3, 0.4], None)])
def test_minutes_to_quality_stops_at_the_first_mark_that_reaches_the_target(confident, expected, monkeypatch, tiny_config):
    asked = []
    monkeypatch.setattr(bench, "quality_during_training", fake_run(confident, asked))
    minutes, log = minutes_to_quality(tiny_config(), target=0.9, max_minutes=20, every_minutes=5, n_eval=10)
    assert minutes == expected
    assert asked == [5, 10, 15, 20]
    assert len(log) == (2 if expected else 4)
    assert log[0] == f"5.0 min of training, 500 steps (5.0 epochs): {confident[0]:.1%} confident"


def test_the_recipe_tool_rows_come_from_the_same_measurement(monkeypatch, tiny_config, judge):
    floor = Evaluation(n=10, fid=0.5, confident=0.99, class_fractions=[0.1] * 10)
    monkeypatch.setattr("tools.recipe.reference_and_floor", lambda n: (*judge, floor))
    monkeypatch.setattr("tools.recipe.quality_during_training", fake_run([0.25], []))
    (row, stochastic) = measure("baseline", tiny_config(), [2], "minutes", 10, (0.0, 1.0))
    assert row["mark"] == "2 minutes" and row["steps"] == 200 and row["images"] == 200 * tiny_config().batch_size
    assert (row["eta"], stochastic["eta"]) == (0.0, 1.0)
    assert (row["train_seconds"], row["confident"], row["fid"], row["fid_ratio"]) == (120, 0.25, 1.0, 2.0)


def test_the_recipe_tool_keeps_the_weights_that_drew_each_marks_digits(monkeypatch, tmp_path, tiny_config, judge):
    from safetensors.torch import load_file

    network = torch.nn.Linear(3, 2)
    floor = Evaluation(n=10, fid=0.5, confident=0.99, class_fractions=[0.1] * 10)
    monkeypatch.setattr("tools.recipe.reference_and_floor", lambda n: (*judge, floor))
    monkeypatch.setattr("tools.recipe.quality_during_training", fake_run([0.25, 0.5], [], network))
    rows = list(measure("baseline", tiny_config(), [2, 3], "steps", 10, (0.0, 1.0), weights_dir=tmp_path))
    assert len(rows) == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["baseline_200.safetensors", "baseline_300.safetensors"]
    kept = load_file(tmp_path / "baseline_300.safetensors")
    assert kept.keys() == network.state_dict().keys()
    assert all(torch.equal(kept[name], tensor) for name, tensor in network.state_dict().items())


def test_the_recipe_tool_refuses_to_append_to_a_csv_with_other_columns(tmp_path, capsys):
    from tools.recipe import main

    older = tmp_path / "rows.csv"
    older.write_text("variant,device,mark\nbaseline,cpu,2 minutes\n")
    with pytest.raises(SystemExit):
        main(["--variant", "baseline", "--steps", "1", "--out", str(older)])
    assert "give a new --out file" in capsys.readouterr().err
    assert older.read_text() == "variant,device,mark\nbaseline,cpu,2 minutes\n"


def test_the_recipe_table_keeps_each_samplers_row(tmp_path):
    from tools.recipe import COLUMNS, markdown_table

    rows = tmp_path / "rows.csv"
    line = "v,cpu,561 steps,561,0,1.0,1000,{confident},{fid},0.2,1.0,{{}},{eta}\n"
    rows.write_text(",".join(COLUMNS) + "\n" + line.format(confident=0.4, fid=14, eta=0.0) + line.format(confident=0.5, fid=12, eta=1.0))
    without_eta = tmp_path / "without_eta.csv"  # a table with no eta column: its rows were measured at eta 0
    without_eta.write_text(",".join(COLUMNS[:-1]) + "\nw,cpu,561 steps,561,0,1.0,1000,0.3,20,0.2,1.0,{}\n")
    table = markdown_table([str(rows), str(without_eta)])
    assert "| v | 14 / 40% |" in table and "| v, eta 1 | 12 / 50% |" in table and "| w | 20 / 30% |" in table


@pytest.mark.parametrize("arguments", [["--steps", "10,x"], ["--steps", "10", "--eta", "one"]], ids=["steps", "eta"])
def test_the_recipe_tool_names_a_list_that_is_not_numbers(arguments, capsys):
    from tools.recipe import main

    with pytest.raises(SystemExit):
        main(["--variant", "baseline", *arguments, "--out", "unused.csv"])
    assert "expected comma-separated numbers" in capsys.readouterr().err
