"""How long each phase runs: the fine-tuning baselines get the same step budget."""

import pytest
from labelclean.training.loop import TrainConfig, batch_split, resolve_schedule, steps_per_epoch


def test_mixed_batches_hold_t_and_v_nine_to_one():
    cfg = TrainConfig(batch_size=64)
    assert batch_split(cfg, "joint") == batch_split(cfg, "mixed") == (58, 6)
    assert batch_split(cfg, "noisy") == (64, 0)
    assert batch_split(cfg, "clean") == batch_split(cfg, "cleaner") == (0, 64)


def test_finetune_clean_gets_the_joint_step_budget_by_default():
    n_t, n_v = 19_997, 400
    cfg = resolve_schedule(TrainConfig(finetune_epochs=3), n_t, n_v)
    joint_steps = 3 * steps_per_epoch(cfg, "joint", n_t, n_v)
    assert joint_steps == 3 * (n_t // 58)
    clean_steps = cfg.clean_epochs * steps_per_epoch(cfg, "clean", n_t, n_v)
    assert clean_steps == pytest.approx(joint_steps, abs=steps_per_epoch(cfg, "clean", n_t, n_v))


def test_an_explicit_clean_schedule_is_kept():
    assert resolve_schedule(TrainConfig(clean_epochs=5), 1000, 100).clean_epochs == 5
