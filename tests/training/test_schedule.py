"""How long each phase runs and what its batches hold: T and V mix 9:1, and the fine-tuning
baselines get the same step budget."""

import pytest
from labelclean.training.loop import TrainConfig, batch_split, resolve_schedule, steps_per_epoch


def _totals(cfg: TrainConfig, phase: str, steps: int) -> tuple[int, int]:
    splits = [batch_split(cfg, phase, k) for k in range(steps)]
    return sum(t for t, _ in splits), sum(v for _, v in splits)


@pytest.mark.parametrize("batch_size", [64, 32, 100, 50, 17])
@pytest.mark.parametrize("phase", ["joint", "mixed"])
def test_mixed_batches_hold_t_and_v_nine_to_one(phase, batch_size):
    cfg = TrainConfig(batch_size=batch_size)
    for steps in range(1, 41):
        t, v = _totals(cfg, phase, steps)
        assert t + v == steps * batch_size
        # the running V count is as close to a tenth as an integer can be ...
        assert v == (steps * batch_size) // 10
    # ... so every 10 batches (every 5 of 64) are exactly 9:1
    t, v = _totals(cfg, phase, 10)
    assert t == 9 * v
    for k in range(40):  # and no batch strays further than one image from it
        _, v = batch_split(cfg, phase, k)
        assert batch_size // 10 <= v <= -(-batch_size // 10)


def test_batches_of_64_alternate_six_and_seven_v_images():
    cfg = TrainConfig(batch_size=64)
    assert [batch_split(cfg, "joint", k)[1] for k in range(5)] == [6, 6, 7, 6, 7]
    assert _totals(cfg, "joint", 5) == (288, 32)


def test_single_set_phases_are_all_t_or_all_v():
    cfg = TrainConfig(batch_size=64)
    for k in range(3):
        assert batch_split(cfg, "noisy", k) == (64, 0)
        assert batch_split(cfg, "clean", k) == batch_split(cfg, "cleaner", k) == (0, 64)


@pytest.mark.parametrize("n_t", [19_997, 288, 287, 1000])
def test_a_joint_epoch_is_one_pass_over_t(n_t):
    cfg = TrainConfig(batch_size=64)
    steps = steps_per_epoch(cfg, "joint", n_t, 400)
    assert _totals(cfg, "joint", steps)[0] <= n_t < _totals(cfg, "joint", steps + 1)[0]
    assert steps_per_epoch(cfg, "noisy", n_t, 400) == n_t // 64
    assert steps_per_epoch(cfg, "clean", n_t, 400) == 7  # ceil(400 / 64): a pass over V


def test_finetune_clean_gets_the_joint_step_budget_by_default():
    n_t, n_v = 19_997, 400
    cfg = resolve_schedule(TrainConfig(finetune_epochs=3), n_t, n_v)
    joint_steps = 3 * steps_per_epoch(cfg, "joint", n_t, n_v)
    assert joint_steps == 3 * 347  # 347 batches hold 19_988 T images (57.6 a batch on average)
    clean_steps = cfg.clean_epochs * steps_per_epoch(cfg, "clean", n_t, n_v)
    assert clean_steps == pytest.approx(joint_steps, abs=steps_per_epoch(cfg, "clean", n_t, n_v))


def test_an_explicit_clean_schedule_is_kept():
    assert resolve_schedule(TrainConfig(clean_epochs=5), 1000, 100).clean_epochs == 5
