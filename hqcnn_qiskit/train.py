"""Training: official splits, Adam, selection on validation AUC, exact resume.

Every epoch writes ``last.pt`` (and ``best.pt`` when validation AUC improves) atomically, so a
crash loses at most the epoch in progress; ``resume=True`` continues from ``last.pt`` with the
same weights, optimizer moments, RNG states and shuffling, and gives the same result as an
uninterrupted run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import validate
from .checkpoint import (
    load_checkpoint,
    probe_writable,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_json,
)
from .data import DatasetSpec, augment_batch, load_split
from .errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    first_line,
)
from .evaluate import evaluate_model
from .jsonio import read_json
from .model import HQCNN, ModelConfig, count_parameters
from .profiles import (
    SLOW_TO_TRAIN,
    eval_batch_size,
    profile_difference,
    profile_snapshot,
    refuse_on_hardware,
    snapshot_profile,
)

__all__ = ["TrainConfig", "train", "train_or_reuse"]

CURVES_EVERY_SECONDS = 30.0  # redraw curves.png during training at most this often
# Fields that define what is trained; a resume must agree on all of them.
_IDENTITY = ("dataset", "model", "layers", "attention", "angle_scale", "angle_norm", "backend",
             "seed", "batch_size", "lr", "lr_schedule", "weight_decay", "augment", "limit_train",
             "limit_eval")
# Learning-rate schedules: name -> (fractions of the total epochs after which the rate drops,
# factor of each drop). "step" is the schedule MedMNIST v2 trained its baselines with.
LR_SCHEDULES = {"constant": ((), 1.0), "step": ((0.5, 0.75), 0.1)}


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Args:
        dataset: Dataset, image size and optional binary cut.
        model: ``"hqcnn"`` or ``"classical"``.
        backend: Backend profile for the quantum layer (name or path).
        epochs: Epochs to train in total.
        seed: Seeds weights, dropout, shuffling and shot sampling.
        batch_size: Training batch size.
        lr: Adam learning rate.
        lr_schedule: ``"constant"``, or ``"step"``: the rate is multiplied by 0.1 from
            0-based epoch ⌈E/2⌉ on and again from ⌈3E/4⌉ on, for ``E`` epochs in total
            (MedMNIST v2's schedule, which trained for E = 100).
        weight_decay: Adam weight decay.
        augment: Randomly shift (up to 2 px) and mirror each training image every epoch.
        limit_train: Train on a fixed subset of this many images.
        limit_eval: Validate and test on fixed subsets of this many images.
        layers: U3 + CNOT-ring repetitions.
        attention: Whether the circuit has the attention block.
        angle_scale: ``s`` in ``θ = s·tanh(BN(h))``.
        angle_norm: The BatchNorm in the angle map (``False``: the paper's literal map).
    """

    dataset: DatasetSpec = field(default_factory=lambda: DatasetSpec("breastmnist"))
    model: str = "hqcnn"
    backend: str = "aer_ideal"
    epochs: int = 30
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    augment: bool = False
    limit_train: int | None = None
    limit_eval: int | None = None
    layers: int = 1
    attention: bool = True
    angle_scale: float = math.pi / 2
    angle_norm: bool = True

    def __post_init__(self):
        """Check every field and store it as a plain Python value (what a checkpoint can hold),
        so that a mistake fails here and not after an epoch of training."""
        dataset = DatasetSpec(self.dataset) if isinstance(self.dataset, str) else self.dataset
        if not isinstance(dataset, DatasetSpec):
            raise ConfigError(f"dataset must be a DatasetSpec or a dataset name, got {dataset!r}")
        values = {
            "dataset": dataset, "model": validate.text(self.model, "model"),
            # a profile file is kept as given (relative paths move with the project)
            "backend": validate.text(self.backend, "backend", path=True),
            "epochs": validate.integer(self.epochs, "epochs", low=1),
            "seed": validate.integer(self.seed, "seed"),
            # batch statistics (BatchNorm) need two images in training, AUC two in evaluation
            "batch_size": validate.integer(self.batch_size, "batch_size", low=2),
            "limit_train": _optional(validate.integer, self.limit_train, "limit_train", low=2),
            "limit_eval": _optional(validate.integer, self.limit_eval, "limit_eval", low=2),
            "lr": validate.real(self.lr, "lr", positive=True),
            "lr_schedule": validate.text(self.lr_schedule, "lr_schedule"),
            "weight_decay": validate.real(self.weight_decay, "weight_decay", non_negative=True),
            "augment": validate.boolean(self.augment, "augment"),
        }
        if values["lr_schedule"] not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                              f"got {values['lr_schedule']!r}")
        for name, value in values.items():
            object.__setattr__(self, name, value)
        # the architecture fields (model, layers, attention, angle_scale, angle_norm) are
        # checked and normalised by ModelConfig, before any data is loaded
        model = self.model_config()
        for name in ("layers", "attention", "angle_scale", "angle_norm"):
            object.__setattr__(self, name, getattr(model, name))

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch`` under :attr:`lr_schedule`."""
        fractions, factor = LR_SCHEDULES[self.lr_schedule]
        return self.lr * factor ** sum(epoch >= f * self.epochs for f in fractions)

    def model_config(self) -> ModelConfig:
        """The architecture for this dataset."""
        return ModelConfig(
            model=self.model, in_channels=self.dataset.channels,
            num_outputs=self.dataset.num_outputs, image_size=self.dataset.size,
            angle_scale=self.angle_scale, layers=self.layers, attention=self.attention,
            angle_norm=self.angle_norm,
        )

    def to_dict(self) -> dict:
        """Plain values for checkpoints and JSON."""
        data = asdict(self)
        data["dataset"] = self.dataset.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "dataset": DatasetSpec.from_dict(data["dataset"])})


def _optional(check, value, name: str, **bounds):
    """``check(value, name, **bounds)``, or None for None."""
    return None if value is None else check(value, name, **bounds)


def _check_writable(out: Path) -> None:
    """Fail early if ``out`` cannot be written; the probe leaves no folder behind, so a run that
    fails before training (bad backend, missing data) leaves nothing."""
    if out.is_file():
        raise ConfigError(f"the run folder {out} is a file; choose a folder (--out)")
    try:
        probe_writable(out)
    except OSError as exc:
        raise ConfigError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None


def _resume_clash(checkpoint: Path, state: dict, config: TrainConfig,
                  snapshot: dict | None) -> str | None:
    """Why the run in ``checkpoint`` (its ``state``) cannot go on as ``config``: a setting that
    differs (the number of epochs only where the schedule's milestones move with it), or a
    backend profile that runs differently (a run that kept its profile is compared by what the
    profile says, not by its name or path); None if it can.

    Raises:
        CheckpointError: The checkpoint's config or kept profile is unusable.
    """
    try:
        saved = TrainConfig.from_dict(state["train_config"])
    except (KeyError, TypeError, ConfigError, DataError) as exc:
        raise CheckpointError(f"{checkpoint} has no usable training config "
                              f"({first_line(exc)})") from None
    kept = state.get("backend_profile") if snapshot else None
    clash = [k for k in _IDENTITY if (k != "backend" or not kept)
             and getattr(saved, k) != getattr(config, k)]
    if LR_SCHEDULES[config.lr_schedule][0] and saved.epochs != config.epochs:
        clash.append("epochs")  # the schedule's milestones move with the total
    if clash:
        k = clash[0]
        return (f"{checkpoint} was trained with {k}={_shown(getattr(saved, k))}, this run "
                f"asks for {k}={_shown(getattr(config, k))}")
    if not kept:
        return None
    try:
        differs = profile_difference(snapshot_profile(kept), snapshot_profile(snapshot))
    except BackendError as exc:
        raise CheckpointError(f"{checkpoint}: {first_line(exc)}") from None
    if differs is None:
        return None
    if kept["source"] == snapshot["source"]:
        return (f"the backend profile {snapshot['source']} has changed since {checkpoint} was "
                f"trained with it ({differs})")
    return (f"{checkpoint} was trained with the backend profile {kept['source']}; "
            f"{snapshot['source']} runs differently ({differs}); pass --backend "
            f"{kept['source'].removesuffix(' (shipped)')} to resume it")


def _shown(value) -> str:
    """A config value as a user typed it (a dataset as ``breastmnist (28px)``)."""
    return value.describe() if isinstance(value, DatasetSpec) else repr(value)


def _batches(n: int, size: int) -> list[slice]:
    """Consecutive batches of ``size``; a last batch of a single image joins the one before
    (BatchNorm cannot normalise one image)."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], n])]


def _loss_fn(spec: DatasetSpec) -> nn.Module:
    return nn.BCEWithLogitsLoss() if spec.multilabel else nn.CrossEntropyLoss()


def _batch_postfix(model: HQCNN, loss: float) -> dict:
    postfix = {"loss": f"{loss:.4f}"}
    stats = getattr(model.quantum.backend, "last_batch_stats", None) if model.is_quantum else None
    if stats:
        if stats.get("shots") and stats.get("circuits"):
            postfix["shots"] = f"{stats['shots'] // stats['circuits']}x{stats['circuits']}"
        if stats.get("seconds") is not None:
            postfix["quantum_s"] = f"{stats['seconds']:.2f}"
    return postfix


def _diverged(config: TrainConfig, epoch: int, what: str) -> DivergedError:
    """The error for a run whose numbers blew up (nothing of the epoch is saved)."""
    kept = f"last.pt keeps epoch {epoch}" if epoch else "no epoch was saved"
    return DivergedError(f"training diverged in epoch {epoch + 1}: {what}; {kept}. Train again "
                         f"with a smaller learning rate (--lr; this run: {config.lr:g}) into "
                         "another run folder (--out)")


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    resume: bool = False,
    verify: bool = True,
    progress: bool = True,
    log=None,
) -> dict:
    """Train, select on validation AUC, evaluate the best checkpoint on the test split.

    Args:
        config: What to train.
        out: Run folder: ``best.pt``, ``last.pt``, ``metrics.json``, ``curves.png`` (the
            training curves, redrawn after an epoch once :data:`CURVES_EVERY_SECONDS` have passed,
            and when training ends, before the test pass) and,
            for transpiled backends, ``circuit.qpy``.
        data_root: Data folder (else ``$HQCNN_DATA_ROOT``, else medmnist's default).
        resume: Continue from ``out/last.pt``.
        verify: Check dataset MD5s.
        progress: Show progress bars.
        log: Where to print one-line progress messages (default: stderr).

    Returns:
        The contents of ``metrics.json``.

    Raises:
        ConfigError: The backend is IBM hardware (train on a simulator, then ``infer``), or the
            run folder holds another run.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    _check_writable(out)
    spec = config.dataset

    # the profile is kept with the run (see profiles.profile_snapshot); the classical twin
    # has no circuit, so its backend is only a name it ignores
    snapshot = profile_snapshot(config.backend) if config.model != "classical" else None
    profile = snapshot_profile(snapshot) if snapshot else None
    if profile is not None:
        refuse_on_hardware(profile, "training",
                           "every step would be several paid QPU jobs (the forward pass and "
                           "the parameter-shift gradients of each batch)")
    state = None
    if not resume and (out / "last.pt").exists():
        raise ConfigError(f"{out} already holds a run (last.pt): resume it (--resume, "
                          "resume=True), or choose another run folder")
    if resume:
        state = load_checkpoint(out / "last.pt")
        clash = _resume_clash(out / "last.pt", state, config, snapshot)
        if int(state["epoch"]) + 1 > config.epochs:
            raise CheckpointError(f"{out / 'last.pt'} has already trained "
                                  f"{int(state['epoch']) + 1} epochs, more than the "
                                  f"{config.epochs} this run asks for")
        if clash:
            raise CheckpointError(clash)

    seed_everything(config.seed)
    train_set = load_split(spec, "train", root=data_root, limit=config.limit_train, verify=verify)
    val_set = load_split(spec, "val", root=data_root, limit=config.limit_eval, verify=verify)
    test_set = load_split(spec, "test", root=data_root, limit=config.limit_eval, verify=verify)

    init = torch.Generator().manual_seed(config.seed)
    model = HQCNN(config=config.model_config(),
                  backend=profile if profile is not None else config.backend,
                  generator=init)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(config.seed + 1)
    counts = count_parameters(model)
    backend_info = model.quantum.backend.describe() if model.is_quantum else {"name": "none"}
    log(
        f"{config.model} on {spec.describe()}: {counts['quantum']} quantum + "
        f"{counts['classical']} classical parameters; backend {backend_info.get('name')}; "
        f"train/val/test {len(train_set)}/{len(val_set)}/{len(test_set)}"
    )
    # images per evaluation pass: small where one pass is slow, so the test bar moves
    eval_batch = eval_batch_size(backend_info.get("kind"))
    if backend_info.get("kind") in SLOW_TO_TRAIN:
        log(f"note: training on {backend_info['name']} runs every parameter-shift circuit "
            "through the device path, seconds per image per step; the usual route is to train "
            "on aer_noisy and evaluate or infer here")
    if "qubits" in backend_info:
        log(
            f"circuit on {backend_info.get('device')}: physical qubits {backend_info['qubits']}, "
            f"depth {backend_info.get('depth')}, two-qubit gates "
            f"{backend_info.get('two_qubit_gates')}"
        )
    out.mkdir(parents=True, exist_ok=True)
    save_qpy = getattr(model.quantum.backend, "save_qpy", None) if model.is_quantum else None
    if save_qpy is not None:
        save_qpy(out / "circuit.qpy")

    history: list[dict] = []
    best = {"epoch": -1, "auc": -math.inf}
    start_epoch = 0
    elapsed = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle_rng"])
        set_rng_state(state["rng"])
        if model.is_quantum and "backend_rng" in state:  # shots and twirls continue exactly
            model.quantum.backend.set_rng_state(state["backend_rng"])
        history = list(state["history"])
        best = dict(state["best"])
        start_epoch = int(state["epoch"]) + 1
        elapsed = float(state.get("elapsed", 0.0))
        log(f"resuming {out} at epoch {start_epoch + 1}/{config.epochs}"
            if start_epoch < config.epochs else
            f"{out} has trained all {config.epochs} epochs; testing its best checkpoint again")

    loss_fn = _loss_fn(spec)
    images, labels = train_set.tensors
    title = f"{spec.describe()}, {config.model}, seed {config.seed}"
    drawn = time.monotonic()
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        lr = config.learning_rate(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(images), generator=shuffle)
        total, seen = 0.0, 0
        bar = tqdm(_batches(len(order), config.batch_size), disable=not progress, unit="batch",
                   desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        for batch_slice in bar:
            idx = order[batch_slice]
            optimizer.zero_grad(set_to_none=True)
            batch = (augment_batch(images[idx], shuffle, flip=spec.mirror_safe)
                     if config.augment else images[idx])
            loss = loss_fn(model(batch), labels[idx])
            if not torch.isfinite(loss):
                raise _diverged(config, epoch, f"the training loss is {loss.item()}")
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(_batch_postfix(model, loss.item()), refresh=False)
        bar.close()
        # both checks are needed: blown-up weights can still give finite (constant) scores,
        # and finite weights can overflow into non-finite scores
        if not all(torch.isfinite(t).all() for t in model.state_dict().values()
                   if t.is_floating_point()):  # weights and BatchNorm statistics
            raise _diverged(config, epoch, "the weights are no longer finite")
        try:
            val = evaluate_model(model, spec, val_set, batch_size=eval_batch)
        except DivergedError:
            raise _diverged(config, epoch, "the validation scores are not finite") from None
        seconds = time.perf_counter() - started
        elapsed += seconds
        record = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_acc": val["acc"],
                  "val_auc": val["auc"], "lr": lr, "seconds": seconds}
        history.append(record)
        # an undefined AUC (a one-class subset) never beats a number, but the first epoch is
        # always kept so that best.pt exists
        improved = best["epoch"] < 0 or val["auc"] > best["auc"]
        if improved:
            best = {"epoch": epoch + 1, "auc": val["auc"], "acc": val["acc"]}
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "backend_rng": model.quantum.backend.rng_state() if model.is_quantum else {},
            "shuffle_rng": shuffle.get_state(),
            "epoch": epoch,
            "history": history,
            "best": best,
            "elapsed": elapsed,
            "train_config": config.to_dict(),
            "backend_profile": snapshot,
            "model_config": config.model_config().to_dict(),
            "parameters": counts,
        }
        if improved:
            save_checkpoint(out / "best.pt", payload)
        save_checkpoint(out / "last.pt", payload)
        if time.monotonic() - drawn >= CURVES_EVERY_SECONDS and epoch + 1 < config.epochs:
            _draw_curves(out, history, best["epoch"], title, log)
            drawn = time.monotonic()
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}  val acc "
            f"{val['acc']:.4f} auc {val['auc']:.4f}  ({seconds:.1f}s){'  *best' if improved else ''}"
        )

    _draw_curves(out, history, best["epoch"], title, log)  # before the test pass, maybe long
    best_state = load_checkpoint(out / "best.pt")
    model.load_state_dict(best_state["model"])
    test = evaluate_model(model, spec, test_set, batch_size=eval_batch, progress=progress,
                          desc="test")
    metrics = {
        "best_epoch": best["epoch"],
        "val": {"acc": best.get("acc"), "auc": best["auc"]},
        "test": {"acc": test["acc"], "auc": test["auc"], "n": test["n"]},
        "history": history,
        "parameters": counts,
        "wall_time_s": elapsed,
        "backend": backend_info,
        "config": config.to_dict(),
    }
    write_json(out / "metrics.json", metrics)
    log(f"best epoch {best['epoch']}: test acc {test['acc']:.4f} auc {test['auc']:.4f} -> {out}")
    return metrics


def _draw_curves(out: Path, history: list[dict], best_epoch: int, title: str, log) -> None:
    """``out/curves.png``: the loss and the validation metrics so far. A figure that cannot be
    written (a full disk) is a note, never the end of a training run."""
    from .plots import save_figure, training_curves

    if not history:
        return
    try:
        save_figure(training_curves(history, best_epoch=best_epoch, title=title),
                    out / "curves.png")
    except ConfigError as exc:
        log(f"note: no training curves: {exc}")


def train_or_reuse(config: TrainConfig, out: str | os.PathLike, **kwargs) -> tuple[dict, Path]:
    """:func:`train`, reusing what ``out`` already holds: for notebooks and scripts that are
    run again, with more epochs, fewer, or other settings.

    - No run in ``out``: train one.
    - A run with the same settings (epochs aside) that has trained at least ``config.epochs``
      epochs: reused as it is (its ``metrics.json``, which then covers all its epochs; a run
      stopped before writing it is tested again); shorter: trained on to ``config.epochs``.
    - A run with other settings (another seed, say): left alone; this one goes to ``out-2``
      (or ``-3``, ...), and ``log`` says so.

    Args:
        config: What to train.
        out: The run folder.
        **kwargs: Passed to :func:`train` (``data_root``, ``progress``, ``log``, ...).

    Returns:
        The metrics and the run folder they belong to.
    """
    kwargs.pop("resume", None)  # decided here
    log = kwargs.get("log") or (lambda msg: print(msg, file=sys.stderr))
    folder = base = Path(out)
    named = base if base.name not in ("", "..") else base.resolve()  # "." has no name to extend
    snapshot = profile_snapshot(config.backend) if config.model != "classical" else None
    for n in range(2, 10**6):
        if not (folder / "last.pt").exists():
            return train(config, folder, **kwargs), folder
        kept = load_checkpoint(folder / "last.pt")
        clash = _resume_clash(folder / "last.pt", kept, config, snapshot)
        if clash is None:
            break
        previous, folder = folder, named.with_name(f"{named.name}-{n}")
        log(f"{previous} holds a run with other settings ({clash}); using {folder.name} instead")
    done = int(kept["epoch"]) + 1
    if done < config.epochs:
        return train(config, folder, resume=True, **kwargs), folder
    saved = folder / "metrics.json"
    metrics = read_json(saved) if saved.is_file() else {}
    if len(metrics.get("history", [])) != done:  # stopped before it wrote metrics.json
        metrics = train(replace(config, epochs=done), folder, resume=True, **kwargs)
    log(f"reusing {folder}: it has trained {done} epochs (this run asks for {config.epochs}); "
        "delete the folder to train afresh")
    return metrics, folder
