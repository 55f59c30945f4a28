"""AP_all and MAP against cases computed by hand."""

import numpy as np
import pytest
from labelclean.training.metrics import (
    ap_all,
    break_ties,
    calibrate_thresholds,
    cleaning_report,
    mean_ap,
)


def test_ap_all_pools_every_pair():
    # Pooled pairs sorted by score: 0.9(+) 0.8(-) 0.7(+) 0.2(-)
    # AP = mean precision at each positive = (1/1 + 2/3) / 2
    scores = np.array([[0.9, 0.8], [0.2, 0.7]])
    labels = np.array([[1, 0], [0, 1]])
    known = np.ones_like(labels, bool)
    assert ap_all(scores, labels, known) == pytest.approx((1 + 2 / 3) / 2)


def test_mean_ap_averages_classes():
    # class 0: scores 0.9(+) 0.2(-) -> AP 1; class 1: 0.8(-) 0.7(+) -> AP 1/2
    scores = np.array([[0.9, 0.8], [0.2, 0.7]])
    labels = np.array([[1, 0], [0, 1]])
    known = np.ones_like(labels, bool)
    assert mean_ap(scores, labels, known) == pytest.approx(0.75)


def test_unknown_pairs_are_left_out_not_negatives():
    scores = np.array([[0.9, 0.8], [0.2, 0.7]])
    labels = np.array([[1, 0], [0, 1]])
    known = np.array([[True, False], [True, True]])  # drop the 0.8 negative
    assert ap_all(scores, labels, known) == pytest.approx(1.0)
    assert mean_ap(scores, labels, known) == pytest.approx(1.0)


def test_class_without_positives_is_skipped_in_map():
    scores = np.array([[0.9, 0.1], [0.2, 0.3]])
    labels = np.array([[1, 0], [0, 0]])
    assert mean_ap(scores, labels, np.ones((2, 2), bool)) == pytest.approx(1.0)


def test_thresholds_separate_a_separable_class():
    scores = np.array([[0.1], [0.35], [0.6], [0.9]])
    labels = np.array([[0], [0], [1], [1]])
    (t,) = calibrate_thresholds(scores, labels, np.ones_like(labels, bool))
    assert 0.35 < t <= 0.6


def test_cleaning_report_counts_removed_and_added_labels():
    noisy = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    cleaned = np.array([[0.9, 0.1, 0.8], [0.2, 0.0, 0.1]])
    human = np.array([[1, 0, 1], [1, 0, 0]])
    report = cleaning_report(noisy, cleaned, human, np.ones((2, 3), bool), [0.5, 0.5, 0.5])
    # removed: (0,1) wrong label, correctly removed; (1,0) right label, wrongly removed
    assert report["removed"] == 2
    assert report["removed_precision"] == pytest.approx(0.5)
    assert report["removed_recall"] == pytest.approx(1.0)
    assert report["added"] == 1 and report["added_precision"] == pytest.approx(1.0)
    # label sets: noisy {00, 01, 10} has 2 of 3 true labels right; cleaned {00, 02} both right
    assert report["precision_noisy"] == pytest.approx(2 / 3)
    assert report["recall_noisy"] == pytest.approx(2 / 3)
    assert report["precision_cleaned"] == pytest.approx(1.0)
    assert report["recall_cleaned"] == pytest.approx(2 / 3)
    assert report["f1_cleaned"] == pytest.approx(0.8)


def test_tied_cleaned_labels_are_ordered_by_the_noisy_confidence():
    # c ties at 1 for a wrong and a right label; y (the machine confidence) tells them apart
    noisy = np.array([[0.6], [0.9], [0.3]])
    cleaned = np.array([[1.0], [1.0], [0.2]])
    human = np.array([[0], [1], [0]])
    report = cleaning_report(noisy, cleaned, human, np.ones((3, 1), bool), [0.5])
    assert report["ap_all_cleaned"] == pytest.approx(0.5)  # the tie ranks both at once
    assert report["ap_all_cleaned_tiebreak"] == pytest.approx(1.0)
    assert report["ap_all_listed"] == pytest.approx(1 / 3)  # every pair listed: one in three right
    # a tie-break never reorders distinct cleaned values
    assert np.argsort(break_ties(np.array([0.5, 0.5000001]), np.array([1.0, 0.0])))[1] == 1


def test_threshold_is_never_zero():
    # scores collapsed to 0 for most images: the best-F1 cut would be 0 (every image positive)
    scores = np.array([[0.0], [0.0], [0.0], [0.9]])
    labels = np.array([[1], [1], [1], [0]])
    (t,) = calibrate_thresholds(scores, labels, np.ones_like(labels, bool))
    assert t > 0
