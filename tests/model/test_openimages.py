"""Reading the Open Images layout: T / V / test splits, masks and every bad-input message."""

import numpy as np
import pytest
from labelclean.model.openimages import DataError, DataFiles, load_dataset, read_classes

HEADER = "ImageID,Source,LabelName,Confidence\n"


def write(root, name, text):
    (root / name).write_text(text)


@pytest.fixture()
def files(tmp_path):
    write(tmp_path, "class-descriptions.csv", '/m/a,Apple\n/m/b,"Bag, leather"\n/m/c,Cat\n')
    write(
        tmp_path,
        "train-annotations-machine-imagelabels.csv",
        HEADER
        + "t1,machine,/m/a,0.9\nt1,machine,/m/b,0.4\nt2,machine,/m/c,0.7\nv1,machine,/m/a,0.8\n",
    )
    write(
        tmp_path,
        "train-annotations-human-imagelabels.csv",
        HEADER + "v1,verification,/m/a,0\nv1,verification,/m/b,1\n",
    )
    write(tmp_path, "test-annotations-machine-imagelabels.csv", HEADER + "x1,machine,/m/a,0.6\n")
    write(
        tmp_path,
        "test-annotations-human-imagelabels.csv",
        HEADER + "x1,verification,/m/a,1\nx1,verification,/m/c,0\n",
    )
    return DataFiles(tmp_path)


def test_splits_labels_and_masks(files):
    data = load_dataset(files)
    assert [c.name for c in data.classes] == ["Apple", "Bag, leather", "Cat"]
    assert data.train_noisy.image_ids == ["t1", "t2"]  # T: no verification
    np.testing.assert_allclose(data.train_noisy.noisy, [[0.9, 0.4, 0], [0, 0, 0.7]])
    v = data.verified
    assert v.image_ids == ["v1"]
    np.testing.assert_allclose(v.noisy, [[0.8, 0, 0]])  # V has machine labels y too
    np.testing.assert_array_equal(v.human, [[0, 1, 0]])
    np.testing.assert_array_equal(v.known, [[True, True, False]])  # Cat never verified: unknown
    np.testing.assert_array_equal(data.test.known, [[True, False, True]])


def test_class_header_is_optional(tmp_path):
    write(tmp_path, "c.csv", "LabelName,DisplayName\n/m/a,Apple\n")
    assert [c.id for c in read_classes(tmp_path / "c.csv")] == ["/m/a"]


def test_missing_file_is_named(files):
    (files.root / "test-annotations-human-imagelabels.csv").unlink()
    with pytest.raises(DataError, match="test-annotations-human-imagelabels.csv: file not found"):
        load_dataset(files)


def test_malformed_row_names_file_and_line(files):
    write(
        files.root,
        "train-annotations-machine-imagelabels.csv",
        HEADER + "t1,machine,/m/a,0.9\nt2,machine,/m/a\n",
    )
    with pytest.raises(DataError, match=r"train-annotations-machine-imagelabels.csv:3: expected 4"):
        load_dataset(files)


def test_bad_confidence_names_file_and_line(files):
    write(
        files.root, "train-annotations-human-imagelabels.csv", HEADER + "v1,verification,/m/a,yes\n"
    )
    with pytest.raises(DataError, match=r"human-imagelabels.csv:2: Confidence 'yes'"):
        load_dataset(files)


def test_missing_column_is_reported(files):
    write(files.root, "test-annotations-machine-imagelabels.csv", "ImageID,LabelName\nx1,/m/a\n")
    with pytest.raises(DataError, match="lacks column.*Confidence"):
        load_dataset(files)


def test_unknown_labels_are_listed_or_ignored(files):
    write(
        files.root,
        "test-annotations-machine-imagelabels.csv",
        HEADER + "x1,machine,/m/zebra,0.6\nx1,machine,/m/yak,0.6\nx1,machine,/m/a,0.6\n",
    )
    with pytest.raises(DataError, match=r"2 label\(s\) not in the class file: /m/yak, /m/zebra"):
        load_dataset(files)
    data = load_dataset(files, ignore_unknown=True)
    assert data.unknown_labels == {"/m/zebra": 1, "/m/yak": 1}
    np.testing.assert_allclose(data.test.noisy, [[0.6, 0, 0]])


def test_duplicate_class_is_an_error(tmp_path):
    write(tmp_path, "c.csv", "/m/a,Apple\n/m/a,Again\n")
    with pytest.raises(DataError, match=r"c.csv:2: label '/m/a' is listed twice"):
        read_classes(tmp_path / "c.csv")


def test_extra_human_labels_move_images_to_v_and_win(files, tmp_path):
    """Reviews (`labelclean import-reviews`) as --human-extra: a reviewed T image joins V, and
    where a review and the human labels file disagree on an (image, label), the review wins."""
    write(tmp_path, "reviews.csv", HEADER + "t1,labelstudio,/m/a,0\nt1,labelstudio,/m/c,1\n"
          "v1,labelstudio,/m/a,1\n")  # fmt: skip
    files.train_human_extra = ("reviews.csv",)
    data = load_dataset(files)
    assert data.train_noisy.image_ids == ["t2"]
    v = data.verified
    assert v.image_ids == ["v1", "t1"]
    np.testing.assert_allclose(v.noisy, [[0.8, 0, 0], [0.9, 0.4, 0]])
    np.testing.assert_array_equal(v.human, [[1, 1, 0], [0, 0, 1]])  # v1's Apple: the review's
    np.testing.assert_array_equal(v.known, [[True, True, False], [True, False, True]])
