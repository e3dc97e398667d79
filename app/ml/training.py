"""Train the dense autoencoder on normal feature vectors (Keras), with early stopping, progress per
epoch and cooperative cancel. Its reconstruction error is the anomaly score (PROTOCOL.md 6.1)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from app.domain.errors import Cancelled, DataError, ModelError
from app.ml.tfimport import keras
from app.ml.threshold import DESIGN_FALSE_ALARM_RATE

log = logging.getLogger(__name__)

# A feature whose training spread is below this is constant up to float32 noise; dividing by a
# smaller std would turn that noise into alarms.
STD_FLOOR = 1e-3
# Fewer normal windows than this cannot be split into train / early-stopping / calibration /
# evaluation sets that each mean something.
MIN_TRAINING_WINDOWS = 40
# The threshold's calibration set and the card's evaluation set each get at least this many
# windows: fewer make a 99.5th percentile or a false-alarm rate meaningless.
MIN_HELD_OUT_WINDOWS = 8
# The early-stopping split gets at least this many windows.
MIN_VAL_WINDOWS = 4

# progress(stage, fraction 0..1, message)
ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class TrainConfig:
    """Defaults sized for the smallest profile (stm32f446: 32 KB arena, 192 KB slot): the int8
    model is a few KB and needs a couple of KB of arena."""

    hidden: tuple[int, ...] = (32, 16)
    latent: int = 8
    epochs: int = 150
    batch_size: int = 32
    learning_rate: float = 2e-3
    patience: int = 12  # epochs without val_loss improvement before early stopping
    val_fraction: float = 0.15  # early-stopping split
    calib_fraction: float = 0.2  # held out entirely, for the threshold only
    # Held out entirely, for the card's false-alarm rate, ROC AUC, precision, recall and the
    # int8-vs-float checks: windows the threshold never saw, so false alarms are not ~0 by
    # construction.
    eval_fraction: float = 0.15
    threshold_percentile: float = 99.5
    # The calibration set is a few dozen windows; a margin keeps the live false-alarm rate low.
    threshold_margin: float = 1.5
    # Per-window false-alarm rate the log-normal tail bound is designed for (app.ml.threshold); the
    # threshold is the larger of that bound and percentile x margin. 0 keeps the empirical rule alone.
    threshold_rate: float = DESIGN_FALSE_ALARM_RATE
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.hidden or any(int(u) < 1 for u in self.hidden) or self.latent < 1:
            problems.append("layer sizes must be positive integers")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            problems.append("epochs and batch size must be at least 1")
        if not 0 < self.threshold_percentile <= 100 or not self.threshold_margin > 0:
            problems.append("threshold percentile must be in (0, 100] and margin positive")
        if not 0 <= self.threshold_rate < 0.5:
            problems.append("threshold design rate must be in [0, 0.5)")
        if not (0 < self.val_fraction < 0.5 and 0 < self.calib_fraction < 0.5 and 0 < self.eval_fraction < 0.5):
            problems.append("validation, calibration and evaluation fractions must be in (0, 0.5)")
        elif self.val_fraction + self.calib_fraction + self.eval_fraction >= 0.8:
            problems.append("validation, calibration and evaluation fractions leave under 20% for training")
        if problems:
            raise ModelError("bad training configuration: " + "; ".join(problems))

    @property
    def eval_share(self) -> float:
        """The evaluation set's share of all held-out normal windows (calibration + evaluation)."""
        return self.eval_fraction / (self.calib_fraction + self.eval_fraction)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    calib: np.ndarray  # sets the threshold, nothing else
    evaluation: np.ndarray  # the card's detection metrics: never seen by training or the threshold


def split_held_out(rows: np.ndarray, eval_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle (seeded) held-out normal windows into (calibration, evaluation), `eval_share` of
    them (at least MIN_HELD_OUT_WINDOWS each) for evaluation; DataError when too few."""
    rows = np.asarray(rows, np.float32)
    if len(rows) < 2 * MIN_HELD_OUT_WINDOWS:
        raise DataError(f"only {len(rows)} held-out normal windows; at least {2 * MIN_HELD_OUT_WINDOWS} "
                        f"are needed ({MIN_HELD_OUT_WINDOWS} to set the threshold, {MIN_HELD_OUT_WINDOWS} to "
                        "measure false alarms): record or import more normal data")
    n_eval = min(max(MIN_HELD_OUT_WINDOWS, round(len(rows) * eval_share)), len(rows) - MIN_HELD_OUT_WINDOWS)
    order = np.random.default_rng(seed).permutation(len(rows))
    calib, evaluation = np.split(rows[order], [len(rows) - n_eval])
    return calib, evaluation


def split_normal(features: np.ndarray, config: TrainConfig, calib: np.ndarray | None = None) -> Split:
    """Shuffle (seeded) and split normal windows into train / early-stopping / calibration /
    evaluation; with `calib` given (normal windows held out by source), those are split into
    calibration and evaluation in the ratio of the two fractions instead."""
    features = np.asarray(features, np.float32)
    if len(features) < MIN_TRAINING_WINDOWS:
        raise DataError(f"only {len(features)} normal windows; training needs at least "
                        f"{MIN_TRAINING_WINDOWS} (record or import more normal data)")
    order = np.random.default_rng(config.seed).permutation(len(features))
    n_val = max(MIN_VAL_WINDOWS, round(len(features) * config.val_fraction))
    if calib is not None:
        val, train = np.split(features[order], [n_val])
        calib_rows, evaluation = split_held_out(calib, config.eval_share, config.seed)
        return Split(train=train, val=val, calib=calib_rows, evaluation=evaluation)
    n_calib = max(MIN_HELD_OUT_WINDOWS, round(len(features) * config.calib_fraction))
    n_eval = max(MIN_HELD_OUT_WINDOWS, round(len(features) * config.eval_fraction))
    calib_rows, evaluation, val, train = np.split(
        features[order], [n_calib, n_calib + n_eval, n_calib + n_eval + n_val])
    return Split(train=train, val=val, calib=calib_rows, evaluation=evaluation)


def normalisation(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training set (std floored, see STD_FLOOR)."""
    mean = train.mean(axis=0).astype(np.float32)
    std = np.maximum(train.std(axis=0), STD_FLOOR).astype(np.float32)
    return mean, std


def build_autoencoder(n_features: int, hidden: tuple[int, ...] = TrainConfig.hidden,
                      latent: int = TrainConfig.latent):
    """Dense autoencoder n -> hidden... -> latent -> reversed(hidden)... -> n, ReLU inside (fused
    into FULLY_CONNECTED by the converter, so the int8 model needs no other op), linear output."""
    k = keras()
    inputs = k.Input(shape=(n_features,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        x = k.layers.Dense(units, activation="relu", name=f"enc{i}")(x)
    x = k.layers.Dense(latent, activation="relu", name="latent")(x)
    for i, units in enumerate(reversed(hidden)):
        x = k.layers.Dense(units, activation="relu", name=f"dec{i}")(x)
    outputs = k.layers.Dense(n_features, name="reconstruction")(x)
    return k.Model(inputs, outputs, name="autoencoder")


def _callbacks(config: TrainConfig, progress: ProgressFn | None, cancel: threading.Event | None):
    k = keras()

    class Report(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if progress:
                progress("train", (epoch + 1) / config.epochs,
                         f"epoch {epoch + 1}/{config.epochs} loss {logs.get('loss', float('nan')):.4f} "
                         f"val_loss {logs.get('val_loss', float('nan')):.4f}")

        def on_train_batch_end(self, batch, logs=None):
            if cancel is not None and cancel.is_set():
                self.model.stop_training = True

    stop = k.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                     restore_best_weights=True)
    return [Report(), stop]


@dataclass
class FitResult:
    model: object  # keras.Model
    mean: np.ndarray
    std: np.ndarray
    epochs_run: int
    final_loss: float
    final_val_loss: float


def fit(split: Split, config: TrainConfig = TrainConfig(), progress: ProgressFn | None = None,
        cancel: threading.Event | None = None) -> FitResult:
    """Train on split.train (normalised with its own mean/std); early stopping on split.val.
    Raises Cancelled when `cancel` is set (checked after every batch)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled")
    k = keras()
    k.utils.set_random_seed(config.seed)
    mean, std = normalisation(split.train)
    x_train = (split.train - mean) / std
    x_val = (split.val - mean) / std
    model = build_autoencoder(split.train.shape[1], config.hidden, config.latent)
    model.compile(optimizer=k.optimizers.Adam(config.learning_rate), loss="mse")
    history = model.fit(x_train, x_train, validation_data=(x_val, x_val), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, verbose=0,
                        callbacks=_callbacks(config, progress, cancel))
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled")
    losses = history.history.get("loss", [float("nan")])
    val_losses = history.history.get("val_loss", [float("nan")])
    log.info("trained %d epochs, loss %.4f val_loss %.4f", len(losses), losses[-1], min(val_losses))
    return FitResult(model=model, mean=mean, std=std, epochs_run=len(losses),
                     final_loss=float(losses[-1]), final_val_loss=float(min(val_losses)))


def keras_scores(model, x_norm: np.ndarray) -> np.ndarray:
    """Float reconstruction error per row of normalised input (the float reference score)."""
    x_norm = np.asarray(x_norm, np.float32)
    if len(x_norm) == 0:
        return np.zeros(0, np.float32)
    y = np.asarray(model(x_norm, training=False))
    return np.mean((y - x_norm) ** 2, axis=1).astype(np.float32)
