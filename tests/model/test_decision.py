"""The decision rule and how its thresholds are chosen: the objective is met exactly on the
images it is chosen on (brute force over every pair of cuts), a minimum precision is honoured,
per-class cuts need enough pairs, validation never applies a cut to images that chose it, and a
request's min_precision and threshold pick and override the bundle's cuts."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from labelclean.model.decision import Decision, parse_min_precision
from labelclean.model.labels import InputError
from labelclean.training.crossfit import OutOfFold
from labelclean.training.decision_fit import choose_cuts, consistent, final_sets, set_metrics
from labelclean.training.validation import cross_validated_sets, validate


def _pairs(n: int = 80, d: int = 3, seed: int = 0):
    """Issue scores that are informative but noisy; every pair verified."""
    rng = np.random.default_rng(seed)
    noisy = (rng.random((n, d)) < 0.5).astype(np.float32)
    human = np.where(noisy > 0, rng.random((n, d)) < 0.75, rng.random((n, d)) < 0.15)
    truth_issue = np.where(noisy > 0, ~human, human).astype(float)
    issue = np.clip(0.3 * truth_issue + 0.7 * rng.random((n, d)), 0, 1).astype(np.float32)
    return issue, noisy, human.astype(np.float32), np.ones((n, d), bool)


def _every_cut(values: np.ndarray) -> list[float]:
    return sorted({0.0, 1.0, *values.tolist()})


def test_pooled_cuts_reach_the_best_f1_of_any_pair_of_cuts():
    issue, noisy, human, known = _pairs()
    cuts = choose_cuts(issue, noisy, human, known, min_class_outcomes=np.inf)
    assert not cuts.per_class.any() and len(set(cuts.remove)) == len(set(cuts.add)) == 1
    got = set_metrics(final_sets(noisy, issue, cuts.remove, cuts.add), human, known)["f1"]
    listed = noisy > 0
    best = max(
        set_metrics(final_sets(noisy, issue, np.float32(r), np.float32(a)), human, known)["f1"]
        for r, a in itertools.product(_every_cut(issue[listed]), _every_cut(issue[~listed]))
    )
    assert got == pytest.approx(best)


def test_a_minimum_precision_is_met_with_the_most_true_labels():
    issue, noisy, human, known = _pairs(seed=1)
    listed = noisy > 0
    for p in (0.8, 0.9, 0.97):
        cuts = choose_cuts(issue, noisy, human, known, min_precision=p, min_class_outcomes=np.inf)
        chosen = final_sets(noisy, issue, cuts.remove, cuts.add)
        assert set_metrics(chosen, human, known)["precision"] >= p
        true_kept = int((chosen & (human > 0)).sum())
        for r, a in itertools.product(_every_cut(issue[listed]), _every_cut(issue[~listed])):
            other = final_sets(noisy, issue, np.float32(r), np.float32(a))
            if other.any() and set_metrics(other, human, known)["precision"] >= p:
                assert int((other & (human > 0)).sum()) <= true_kept


def test_a_class_gets_cuts_of_its_own_only_with_enough_pairs_of_each_outcome():
    """Class 0's issue scores run the other way round: with enough pairs it gets its own cut,
    which does better on these images than the pooled one; with few it keeps the pooled one."""
    issue, noisy, human, known = _pairs(n=600, seed=2)
    issue[:, 0] = 1.0 - issue[:, 0]
    pooled = choose_cuts(issue, noisy, human, known, min_class_outcomes=np.inf)
    own = choose_cuts(issue, noisy, human, known, min_class_outcomes=50)
    assert own.per_class[0]
    f1 = {
        name: set_metrics(final_sets(noisy, issue, c.remove, c.add), human, known)["f1"]
        for name, c in (("pooled", pooled), ("own", own))
    }
    assert f1["own"] > f1["pooled"]
    few = choose_cuts(issue, noisy, human, known, min_class_outcomes=10_000)
    assert not few.per_class.any()


def test_the_hierarchy_adds_every_ancestor_of_a_label_in_the_set():
    passes = np.array([[False, False, True], [False, True, False]])
    ancestors = [np.array([], np.int64), np.array([0]), np.array([1, 0])]  # 0 > 1 > 2
    assert consistent(passes, ancestors).tolist() == [[True, True, True], [True, True, False]]


def test_validation_never_applies_a_cut_to_the_images_that_chose_it():
    """A fold's final sets depend only on the other folds' human labels."""
    issue, noisy, human, known = _pairs(n=200, seed=3)
    n, d = issue.shape
    inputs = np.random.default_rng(4).normal(size=(n, d, 3)).astype(np.float32)  # c, scores
    oof = OutOfFold([str(i) for i in range(n)], inputs, noisy, human, known, np.arange(n) % 4,
                    "bce")  # fmt: skip
    before = cross_validated_sets(oof, issue)
    changed = copy.deepcopy(oof)
    held = oof.fold == 2
    changed.human[held] = 1.0 - changed.human[held]
    after = cross_validated_sets(changed, issue)
    for name in ("final", "paper_rule", "machine_thresholded"):
        np.testing.assert_array_equal(after[name][held], before[name][held])
    assert any(not np.array_equal(after[k][~held], before[k][~held]) for k in before)
    figures = validate(oof, issue)
    assert figures["folds"] == 4 and figures["images"] == n
    assert figures["final"] == set_metrics(before["final"], human, known)


def test_requests_pick_a_level_and_override_it():
    d = 3
    half = np.full(d, 0.5, np.float32)
    levels = {0.8: (np.full(d, 0.3), np.full(d, 0.7)), 0.95: (np.full(d, 0.1), np.full(d, 0.9))}
    decision = Decision("issue", "f1", half, half, half, np.zeros(d, bool), levels)
    index = {"/a": 0, "/b": 1, "/c": 2}
    assert decision.cuts()[0].tolist() == [0.5] * d
    remove, add = decision.cuts(min_precision=0.81)
    assert remove.tolist() == pytest.approx([0.1] * d) and add.tolist() == pytest.approx([0.9] * d)
    remove, add = decision.cuts(min_precision=0.5, override='{"/b": 0.42}', index=index)
    assert remove.tolist() == pytest.approx([0.3, 0.42, 0.3])
    assert add.tolist() == pytest.approx([0.7, 0.42, 0.7])
    with pytest.raises(InputError, match="at most 0.95") as info:
        decision.cuts(min_precision=0.99)
    assert info.value.field == "min_precision"
    paper = Decision.paper(half)
    with pytest.raises(InputError, match="rule cleaned"):
        paper.cuts(min_precision=0.8)
    noisy, c, issue = np.array([1.0, 0.0, 1.0]), np.array([0.6, 0.7, 0.2]), np.full(3, 0.9)
    assert paper.passes(noisy, c, issue, *paper.cuts()).tolist() == [True, True, False]
    assert decision.passes(noisy, c, issue, half, half).tolist() == [False, True, False]


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.5", "nan", "high", True])
def test_min_precision_must_be_a_number_in_0_1(bad):
    with pytest.raises(InputError) as info:
        parse_min_precision(bad)
    assert info.value.field == "min_precision"


def test_min_precision_absent_or_given():
    assert parse_min_precision(None) is None and parse_min_precision(" ") is None
    assert parse_min_precision("0.9") == 0.9 and parse_min_precision(1) == 1.0
