"""`nnlab-compare RUN_A RUN_B`: is one classifier really better than the other on the test set?

    nnlab-compare logs/mnist_mlp/runs/<stamp> logs/mnist_cnn/runs/<stamp>

Both runs must have saved their test predictions (the image classifiers do) on the same test
images. Prints both accuracies and their difference, the notebook's back-of-the-envelope
argument (how many binomial standard deviations the difference is), and McNemar's exact test
on the paired predictions: of the images exactly one run got right, a split far from 50/50
means the runs differ.
"""

from __future__ import annotations

import argparse
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.errors import BadInput, exits
from nnlab.tasks.image_classifier import PREDICTIONS

SIGNIFICANCE = 0.05


@dataclass
class Comparison:
    images: int
    correct_a: int
    correct_b: int
    only_a: int  # images A got right and B wrong
    only_b: int
    p_value: float

    @property
    def accuracy_a(self) -> float:
        return self.correct_a / self.images

    @property
    def accuracy_b(self) -> float:
        return self.correct_b / self.images

    @property
    def binomial_std(self) -> float:
        """The notebook's: the std of A's count of correct images, sqrt(N p (1 - p))."""
        return math.sqrt(self.images * self.accuracy_a * (1 - self.accuracy_a))

    @property
    def binomial_sds(self) -> float:
        """B's lead over A in images, in units of binomial_std: the notebook's "6.6 standard
        deviations" (NaN when A got every image, or none, right)."""
        spread = self.binomial_std
        return (self.correct_b - self.correct_a) / spread if spread else math.nan


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference", each discordant image is a fair
    coin toss, so min(only_a, only_b) is Binomial(only_a + only_b, 1/2)."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> Comparison:
    order_a, order_b = np.argsort(a["index"]), np.argsort(b["index"])
    if not np.array_equal(a["index"][order_a], b["index"][order_b]):
        shared = len(np.intersect1d(a["index"], b["index"]))
        raise BadInput(
            f"the runs were tested on different images ({len(a['index'])} and "
            f"{len(b['index'])}, {shared} shared); compare runs with the same dataset, "
            "data.test_subset and data.seed"
        )
    targets = a["target"][order_a]
    if not np.array_equal(targets, b["target"][order_b]):
        raise BadInput(
            "the same image indexes carry different labels in the two runs; "
            "compare runs tested on the same dataset"
        )
    right_a = a["predicted"][order_a] == targets
    right_b = b["predicted"][order_b] == targets
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return Comparison(
        len(targets),
        int(right_a.sum()),
        int(right_b.sum()),
        only_a,
        only_b,
        mcnemar_exact(only_a, only_b),
    )


def paired_t_test(differences: list[float], alternative: str = "greater") -> float:
    """The p-value of a paired t-test over seeds: are the per-seed differences (B - A, each
    seed's two runs paired) centred above zero ("greater"), below ("less"), or away from it
    ("two-sided")? Differences that are all equal (no spread to test against) give 0 when
    they lie on the alternative's side and 1 otherwise; fewer than 2 give NaN."""
    from scipy import stats

    if len(differences) < 2:
        return math.nan
    mean = float(np.mean(differences))
    if np.ptp(differences) == 0:
        side = {"greater": mean > 0, "less": mean < 0, "two-sided": mean != 0}[alternative]
        return 0.0 if side else 1.0
    return float(stats.ttest_1samp(differences, 0.0, alternative=alternative).pvalue)


def compare_runs(run_a: Path, run_b: Path) -> Comparison:
    """Two run dirs' saved test predictions, compared."""
    return compare(load(Path(run_a)), load(Path(run_b)))


def load(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / f"{PREDICTIONS}.npz"
    if not path.is_file():
        saved = "only image classifiers save predictions, after testing, unless analyse=false"
        raise BadInput(f"{path} does not exist ({saved})")
    try:  # allow_pickle stays False: a file of arrays, never of objects
        saved = np.load(path)
        if not isinstance(saved, np.lib.npyio.NpzFile):  # one .npy array under the name
            raise ValueError("one array, not an .npz of index, target and predicted")
        with saved:
            arrays = {key: saved[key] for key in ("index", "target", "predicted")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise BadInput(f"{path} does not read as saved predictions ({error})") from None
    if not all(isinstance(array, np.ndarray) for array in arrays.values()):
        raise BadInput(f"{path} does not read as saved predictions (members that are no arrays)")
    shapes = {array.shape for array in arrays.values()}
    integers = all(np.issubdtype(array.dtype, np.integer) for array in arrays.values())
    if len(shapes) != 1 or len(next(iter(shapes))) != 1 or not integers:
        found = ", ".join(f"{k} {a.dtype}{list(a.shape)}" for k, a in arrays.items())
        raise BadInput(
            f"{path}: expected index, target, predicted as integers, one per image ({found})"
        )
    if not len(arrays["index"]):
        raise BadInput(f"{path} holds no predictions: the run tested no images")
    return arrays


def report(result: Comparison, name_a: str, name_b: str) -> str:
    difference = result.correct_b - result.correct_a
    spread = result.binomial_std
    verdict = (
        f"significant at {SIGNIFICANCE}: the two models' accuracies really differ"
        if result.p_value < SIGNIFICANCE
        else f"not significant at {SIGNIFICANCE}: the difference could be chance"
    )
    n = result.images
    return "\n".join(
        [
            f"A  {name_a}: test accuracy {result.accuracy_a:.4f} ({result.correct_a}/{n})",
            f"B  {name_b}: test accuracy {result.accuracy_b:.4f} ({result.correct_b}/{n})",
            f"B - A: {result.accuracy_b - result.accuracy_a:+.4f} ({difference:+d} images)",
            f"Binomial std of A's count, sqrt(N p (1-p)): {spread:.1f} images; the difference"
            + (f" is {abs(difference) / spread:.1f} of them" if spread else ": n/a, p is 0 or 1")
            + " (the notebook's argument)",
            f"McNemar's exact test: only A right on {result.only_a} images, only B right on "
            f"{result.only_b}; p = {result.p_value:.3g}",
            f"Verdict: {verdict}.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nnlab-compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    with exits("nnlab-compare"):
        result = compare_runs(args.run_a, args.run_b)
    print(report(result, str(args.run_a), str(args.run_b)))


if __name__ == "__main__":
    main()
