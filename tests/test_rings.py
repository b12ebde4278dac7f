"""The rings task reproduces the notebook's finding, and draws its figures."""

from __future__ import annotations

import math

import numpy as np
import torch
from conftest import trained

from nnlab.data.rings import RingsDataModule

# 6,000 of the experiment's 10,000 steps: three nodes reach 1.0 from step 4,500 (the whole
# budget is make reproduce's: claims/rings_magic_three.yaml).
STEPS = "trainer.max_steps=6000"


def test_one_sigmoid_node_cannot_separate_the_rings(config):
    # One node sees the plane through one line: the best half-plane cut is about 70% right, at
    # any budget.
    metrics = trained(config("experiment=rings", "model.hidden_nodes=1", STEPS))
    assert metrics["val/acc"] < 0.8
    assert metrics["test/acc"] < 0.8


def test_three_sigmoid_nodes_separate_the_rings(config, tmp_path):
    metrics = trained(config("experiment=rings", "model.hidden_nodes=3", STEPS, analyse=True))
    assert metrics["val/acc"] >= 0.99
    assert metrics["test/acc"] >= 0.99
    figures = {path.name for path in (tmp_path / "run" / "figures").iterdir()}
    assert figures == {"decision_boundary.png", "hidden_lines.png", "hidden_activations.png"}
    for name in figures:
        png = (tmp_path / "run" / "figures" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000  # a drawn figure, not a blank


def test_analyse_false_skips_the_figures_and_keeps_the_test_metrics(config, tmp_path):
    metrics = trained(config("experiment=rings", "trainer.max_steps=100", "analyse=false"))
    assert 0 <= metrics["test/acc"] <= 1 and metrics["status"].startswith("completed")
    assert not (tmp_path / "run" / "figures").exists()


def test_rings_have_their_radii_and_balanced_classes():
    data = RingsDataModule(train_per_class=300, val_per_class=50, test_per_class=70)
    data.setup()
    for split, per_class in [("train", 300), ("val", 50), ("test", 70)]:
        points, labels = data.splits[split]
        assert points.shape == (2 * per_class, 2) and labels.shape == (2 * per_class,)
        assert int(labels.sum()) == per_class
        radius = points.norm(dim=1)
        assert radius[labels == 0].max() < 1.0
        assert radius[labels == 1].min() >= 3.0 and radius[labels == 1].max() < 4.0


def test_splits_are_independent_of_each_others_sizes():
    small, large = RingsDataModule(train_per_class=10), RingsDataModule(train_per_class=500)
    small.setup()
    large.setup()
    assert torch.equal(small.splits["test"][0], large.splits["test"][0])
    assert not torch.equal(small.splits["train"][0], large.splits["train"][0][:20])


def test_the_3d_hidden_activations_keep_every_label_inside_the_saved_image():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from nnlab.plots.rings import hidden_space

    rng = np.random.default_rng(0)
    for nodes, panels in ((3, 1), (5, 4), (8, 4)):  # at most 4 triples, spread over them all
        figure = hidden_space(rng.random((300, nodes)), rng.integers(0, 2, 300))
        assert len(figure.axes) == panels
        if nodes == 8:
            assert figure.get_suptitle().endswith("(4 of 56 triples)")
            assert {ax.get_zlabel() for ax in figure.axes} > {"node 2", "node 7"}
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        width, height = canvas.get_width_height()
        assert width >= 500 and height >= 500  # readable at its saved size (4 inches were not)
        renderer = canvas.get_renderer()
        named = ("node ", "class ", "Hidden")  # axis labels, the legend, the title
        texts = [t for t in figure.findobj(Text) if t.get_text().startswith(named)]
        assert {"node 0", "node 1", "node 2", "class 1"} <= {t.get_text() for t in texts}
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0, text.get_text()
            assert box.x1 <= width and box.y1 <= height, text.get_text()


def test_the_3d_view_picks_its_triples_without_listing_them_all():
    from itertools import combinations

    from nnlab.plots.rings import _nth_triple, hidden_space

    for nodes in range(3, 10):  # the same order as itertools.combinations
        every = list(combinations(range(nodes), 3))
        assert [_nth_triple(nodes, rank) for rank in range(len(every))] == every
    # A wide layer: 22 million triples, 4 of them at ranks 0, 1/4, 1/2 and 3/4 of all. The
    # triples from node a on number C(512 - a, 3): a quarter start before node 46, and so on.
    figure = hidden_space(np.random.default_rng(0).random((50, 512)), np.arange(50) % 2)
    assert figure.get_suptitle().endswith("(4 of 22,238,720 triples)")
    firsts = [int(ax.get_xlabel().removeprefix("node ")) for ax in figure.axes]
    total = math.comb(512, 3)
    for panel, first in enumerate(firsts):
        left = total - panel * total // 4  # the triples from this panel's on
        assert math.comb(512 - first, 3) >= left > math.comb(511 - first, 3)


def test_the_hidden_lines_name_their_nodes_while_a_legend_can():
    from nnlab.plots.rings import hidden_lines

    rng = np.random.default_rng(0)
    points, labels = rng.random((50, 2)), np.arange(50) % 2
    for nodes, legend in ((1, ["node 0"]), (3, ["node 0", "node 1", "node 2"]), (64, None)):
        figure = hidden_lines(points, labels, rng.normal(size=(nodes, 2)), rng.normal(size=nodes))
        (ax,) = figure.axes
        assert ax.get_title().endswith(f"({nodes} node{'s' * (nodes > 1)})")
        assert len(ax.get_lines()) == nodes
        shown = ax.get_legend()
        texts = [t.get_text() for t in shown.get_texts()] if shown else None
        assert texts == (None if legend is None else ["class 0", "class 1", *legend])
