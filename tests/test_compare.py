"""McNemar's exact test and the alignment of two runs' predictions."""

from __future__ import annotations

import numpy as np
import pytest

from nnlab.analysis.compare import compare, mcnemar_exact
from nnlab.analysis.compare import main as compare_main
from nnlab.errors import BadInput


def predictions(predicted, target=None, index=None):
    predicted = np.asarray(predicted)
    target = np.zeros_like(predicted) if target is None else np.asarray(target)
    index = np.arange(len(predicted)) if index is None else np.asarray(index)
    return {"index": index, "target": target, "predicted": predicted}


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 2**10)  # all ten discordant images favour B
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(2, 12) == pytest.approx(2 * (1 + 14 + 91) / 2**14)


def test_clearly_different_predictions_are_significant():
    a = predictions([1] * 40 + [0] * 60)  # wrong on the first 40 images
    b = predictions([0] * 100)
    result = compare(a, b)
    assert (result.only_a, result.only_b) == (0, 40)
    assert result.p_value < 0.05


def test_identical_predictions_give_a_large_p_value():
    a = predictions([1] * 30 + [0] * 70)
    result = compare(a, predictions([1] * 30 + [0] * 70))
    assert result.p_value == 1.0 and result.accuracy_a == result.accuracy_b == 0.7


def test_predictions_are_aligned_by_image_index():
    a = predictions([0, 1, 1], target=[0, 1, 2], index=[5, 6, 7])
    b = predictions([1, 1, 0], target=[2, 1, 0], index=[7, 6, 5])  # the same, in another order
    result = compare(a, b)
    assert (result.only_a, result.only_b, result.correct_a, result.correct_b) == (0, 0, 2, 2)


def test_runs_whose_labels_differ_are_refused():
    with pytest.raises(BadInput, match="the same image indexes carry different labels"):
        compare(predictions([0, 1], target=[0, 1]), predictions([0, 1], target=[3, 4]))


def test_runs_on_different_test_images_are_refused():
    with pytest.raises(BadInput) as stop:
        compare(predictions([0, 0]), predictions([0, 0], index=[0, 9]))
    assert "tested on different images (2 and 2, 1 shared)" in str(stop.value)


def write_npy_under_npz_name(path):
    with path.open("wb") as file:
        np.save(file, np.arange(5))


def write_zip_of_text(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for key in ("index", "target", "predicted"):
            archive.writestr(key, "not an array")


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_bytes(b"PK\x03\x04 cut short"),
        write_npy_under_npz_name,  # a TypeError traceback
        write_zip_of_text,  # an AttributeError traceback
    ],
)
def test_a_predictions_file_that_is_no_npz_of_arrays_is_bad_input_exit_2(tmp_path, capsys, write):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "test_predictions.npz")
    with pytest.raises(SystemExit) as stop:
        compare_main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nnlab-compare: ") and "does not read as saved predictions" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        (np.array([[1], [2]]), "expected index, target, predicted as integers, one per image"),
        (np.array([], dtype=int), "expected index, target, predicted as integers, one per image"),
        (None, "holds no predictions: the run tested no images"),
    ],
)
def test_predictions_of_the_wrong_shape_or_none_are_bad_input(
    tmp_path, capsys, predicted, expected
):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        empty = predicted is None
        index = np.array([], dtype=int) if empty else np.array([0, 1])
        arrays = {
            "index": index,
            "target": index + 1,
            "predicted": index + 1 if empty else predicted,
        }
        np.savez(tmp_path / name / "test_predictions.npz", **arrays)
    with pytest.raises(SystemExit) as stop:
        compare_main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stop.value.code == 2
    assert expected in capsys.readouterr().err


def test_a_run_without_predictions_says_which_runs_save_them(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with pytest.raises(SystemExit) as stop:
        compare_main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stop.value.code == 2
    said = capsys.readouterr().err
    assert f"{tmp_path / 'a' / 'test_predictions.npz'} does not exist" in said
    assert "image classifiers save predictions, after testing, unless analyse=false" in said
