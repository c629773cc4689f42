"""SVI engine on a tiny amortized model: learning, exact resume, signals, NaN guard, compiles."""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest
from svi_toy import NOISE_SD, flat_params, make_problem

from atomicspi_bayes.errors import ConfigError, ConvergenceError
from atomicspi_bayes.inference import (
    Interrupted,
    SVIConfig,
    latest_checkpoint,
    make_schedule,
    process_slice,
    run_svi,
)

STEPS = 40
CONFIG = SVIConfig(num_steps=STEPS, learning_rate=1e-2, checkpoint_every=5, keep_checkpoints=2)


def _assert_identical(params_a: dict, params_b: dict) -> None:
    a, b = flat_params(params_a), flat_params(params_b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def problem():
    return make_problem(batch_size=32)


@pytest.fixture(scope="module")
def reference(problem, tmp_path_factory):
    """An uninterrupted run with checkpoints."""
    model, guide, batch_fn = problem
    out = tmp_path_factory.mktemp("reference")
    return run_svi(0, model, guide, batch_fn, CONFIG, checkpoint_dir=out)


def test_elbo_improves_and_step_compiles_once(problem):
    model, guide, batch_fn = problem
    config = SVIConfig(num_steps=400, learning_rate=5e-2, schedule="cosine", warmup_steps=20)
    result = run_svi(jax.random.PRNGKey(1), model, guide, batch_fn, config)
    assert result.losses.shape == (400,) and result.steps == 400
    # negative ELBO of 256 items x 8 values: ~3300 at the start, ~100 after 400 steps
    first, last = result.losses[:40].mean(), result.losses[-40:].mean()
    assert last < first - 2500, (first, last)
    # the noise level is learnt: true 0.1, initial 1.0
    assert 0.5 * NOISE_SD < float(result.params["sigma"]) < 3 * NOISE_SD
    assert result.compilations == 1
    assert result.steps_per_s > 0 and result.items_per_s == pytest.approx(32 * result.steps_per_s)


def test_reference_run_writes_checkpoints(reference, problem):
    assert reference.checkpoint is not None and reference.checkpoint.name == "ckpt_000000040.npz"
    assert reference.compilations == 1 and reference.resumed_from is None
    assert np.all(np.isfinite(reference.losses))


def test_resume_after_crash_is_bit_identical(problem, reference, tmp_path):
    model, guide, batch_fn = problem

    def crashing(step):
        if step == 23:
            raise RuntimeError("simulated crash while reading step 23")
        return batch_fn(step)

    with pytest.raises(RuntimeError, match="step 23"):
        run_svi(0, model, guide, crashing, CONFIG, checkpoint_dir=tmp_path)
    assert latest_checkpoint(tmp_path).name == "ckpt_000000020.npz"
    resumed = run_svi(0, model, guide, batch_fn, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 20 and resumed.steps == STEPS
    _assert_identical(resumed.params, reference.params)
    np.testing.assert_array_equal(resumed.losses, reference.losses)
    assert resumed.compilations == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_then_raises_and_resume_is_identical(problem, reference, tmp_path, sig):
    model, guide, batch_fn = problem
    # a job started in the background of a non-interactive shell inherits SIGINT ignored
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def signalling(step):
        if step == 17:
            os.kill(os.getpid(), sig)
        return batch_fn(step)

    with pytest.raises(Interrupted) as info:
        run_svi(0, model, guide, signalling, CONFIG, checkpoint_dir=tmp_path)
    exc = info.value
    assert exc.signal_number == sig and exc.exit_code == 128 + sig
    assert exc.step < STEPS and exc.checkpoint == latest_checkpoint(tmp_path)
    assert exc.checkpoint.name == f"ckpt_{exc.step:09d}.npz"
    # handlers are restored afterwards
    assert {s: signal.getsignal(s) for s in before} == before
    resumed = run_svi(0, model, guide, batch_fn, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == exc.step
    _assert_identical(resumed.params, reference.params)


def test_nan_loss_names_step_and_indices(tmp_path):
    model, guide, batch_fn = make_problem(batch_size=32, nan_at_step=6)
    bad = batch_fn(6)["indices"].tolist()
    with pytest.raises(ConvergenceError, match=r"non-finite loss .* at step 6") as info:
        run_svi(0, model, guide, batch_fn, CONFIG, checkpoint_dir=tmp_path)
    assert str(bad[:8])[1:-1] in str(info.value)
    assert "\n" not in str(info.value)
    # the last good checkpoint (step 5) is kept, nothing non-finite was written
    assert latest_checkpoint(tmp_path).name == "ckpt_000000005.npz"


def test_existing_checkpoints_need_resume_or_overwrite(problem, tmp_path):
    model, guide, batch_fn = problem
    short = SVIConfig(num_steps=3, learning_rate=1e-2)
    run_svi(0, model, guide, batch_fn, short, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"--resume.*--force"):
        run_svi(0, model, guide, batch_fn, short, checkpoint_dir=tmp_path)
    again = run_svi(0, model, guide, batch_fn, short, checkpoint_dir=tmp_path, overwrite=True)
    assert again.resumed_from is None and again.steps == 3


def test_resume_with_other_config_is_refused(problem, tmp_path):
    model, guide, batch_fn = problem
    short = SVIConfig(num_steps=3, learning_rate=1e-2)
    run_svi(0, model, guide, batch_fn, short, checkpoint_dir=tmp_path, fingerprint="data-A")
    with pytest.raises(ConfigError, match="fingerprint"):
        run_svi(
            0,
            model,
            guide,
            batch_fn,
            short,
            checkpoint_dir=tmp_path,
            resume=True,
            fingerprint="data-B",
        )
    with pytest.raises(ConfigError, match="fingerprint"):
        run_svi(
            1,
            model,
            guide,
            batch_fn,
            short,
            checkpoint_dir=tmp_path,
            resume=True,
            fingerprint="data-A",
        )  # another seed


def test_resume_of_finished_run_returns_it(problem, reference):
    model, guide, batch_fn = problem
    out = reference.checkpoint.parent
    again = run_svi(0, model, guide, batch_fn, CONFIG, checkpoint_dir=out, resume=True)
    assert again.resumed_from == STEPS and again.steps == STEPS
    assert again.checkpoint == reference.checkpoint
    _assert_identical(again.params, reference.params)


def test_progress_bar_and_logging(problem, caplog):
    model, guide, batch_fn = problem
    config = SVIConfig(num_steps=6, learning_rate=1e-2, progress=True, log_every=2, prefetch=0)
    with caplog.at_level("INFO", logger="atomicspi_bayes.inference.svi"):
        result = run_svi(0, model, guide, batch_fn, config)
    assert result.steps == 6
    assert sum("items/s" in r.getMessage() for r in caplog.records) == 3


def test_prefetch_depths_agree(problem):
    model, guide, batch_fn = problem
    runs = [
        run_svi(0, model, guide, batch_fn, SVIConfig(num_steps=8, learning_rate=1e-2, prefetch=d))
        for d in (0, 3)
    ]
    _assert_identical(runs[0].params, runs[1].params)


def test_schedule_warmup_then_cosine():
    config = SVIConfig(
        num_steps=100, learning_rate=1.0, schedule="cosine", warmup_steps=10, final_lr_fraction=0.1
    )
    sched = make_schedule(config)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(100)) == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"num_steps": 0},
        {"num_steps": 5, "learning_rate": 0.0},
        {"num_steps": 5, "schedule": "linear"},
        {"num_steps": 5, "warmup_steps": 5},
        {"num_steps": 5, "clip_norm": -1.0},
        {"num_steps": 5, "devices": 0},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        SVIConfig(**bad)


def test_too_many_devices_is_config_error(problem):
    model, guide, batch_fn = problem
    config = SVIConfig(num_steps=2, devices=jax.device_count() + 1)
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count"):
        run_svi(0, model, guide, batch_fn, config)


def test_compile_counter_sees_a_recompile(problem, caplog):
    """The counter behind ``compilations == 1`` is live: a shape change is caught."""
    model, guide, batch_fn = problem

    def varying(step):
        batch = batch_fn(step)
        return batch if step < 3 else {k: v[:16] for k, v in batch.items()}

    with caplog.at_level("WARNING", logger="atomicspi_bayes.inference.svi"):
        result = run_svi(0, model, guide, varying, SVIConfig(num_steps=5, learning_rate=1e-2))
    assert result.compilations == 2
    assert any("compiled 2 times" in r.getMessage() for r in caplog.records)


def test_interrupt_without_checkpoint_folder(problem):
    model, guide, batch_fn = problem

    def signalling(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch_fn(step)

    with pytest.raises(Interrupted) as info:
        run_svi(0, model, guide, signalling, SVIConfig(num_steps=50, learning_rate=1e-2))
    assert info.value.exit_code == 143 and info.value.checkpoint is None
    assert "--resume" in str(info.value)


def test_process_slice_single_process():
    assert process_slice(32) == slice(0, 32)


def test_nan_guard_names_indices_of_namedtuple_batch():
    """Batches may be NamedTuples (as the cryo-EM model's ParticleBatch) with ``indices``."""
    from typing import NamedTuple

    class Batch(NamedTuple):
        indices: np.ndarray
        y: np.ndarray

    model, guide, batch_fn = make_problem(batch_size=32, nan_at_step=2)

    def as_tuple(step):
        b = batch_fn(step)
        return Batch(indices=b["indices"], y=b["y"])

    def tuple_model(batch):
        model({"y": batch.y})

    def tuple_guide(batch):
        guide({"y": batch.y})

    bad = batch_fn(2)["indices"].tolist()
    config = SVIConfig(num_steps=5, learning_rate=1e-2)
    with pytest.raises(ConvergenceError, match=r"at step 2; batch items") as info:
        run_svi(0, tuple_model, tuple_guide, as_tuple, config)
    assert str(bad[:8])[1:-1] in str(info.value)
