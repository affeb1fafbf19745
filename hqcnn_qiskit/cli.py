"""The ``hqcnn-qiskit`` command: a thin layer over the public Python API.

Errors a user can cause (bad options, files, data, checkpoints, backends) are printed as one
line and exit with status 2 (usage) or 1 (everything else); tracebacks are for our bugs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from .errors import HQCNNError
from .jsonio import to_json

__all__ = ["main", "console_main", "build_parser"]


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, where it has a meaningful one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == () or default == argparse.SUPPRESS
                or "default" in text or not action.option_strings):
            return action.help
        shown = f"{action.default:.4g}" if isinstance(action.default, float) else "%(default)s"
        return f"{text} (default: {shown})".lstrip()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and defaults in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str, *, parse: type, zero: bool):
    """``text`` as an int or float that is positive (or, with ``zero``, not negative)."""
    try:
        value = parse(text)
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got '{text}'") from None
    if not (value >= 0 if zero else value > 0) or math.isinf(value):
        kind = "zero or a positive number" if zero else "a positive number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, parse=int, zero=False)


def _at_least_two(text: str) -> int:
    """Batch sizes and image limits: BatchNorm needs two images to train, AUC two to score."""
    value = _number(text, parse=int, zero=False)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2, got {value}")
    return value


def _resamples(text: str) -> int:
    value = _number(text, parse=int, zero=True)
    if 0 < value < 100:
        raise argparse.ArgumentTypeError(f"expected 0 (no intervals) or at least 100, got {value}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, parse=float, zero=False)


def _non_negative_float(text: str) -> float:
    return _number(text, parse=float, zero=True)


def _png_file(text: str) -> str:
    """``--plot``: checked before any work, so that a typo does not cost an evaluation."""
    from .errors import ConfigError
    from .validate import png_file

    try:
        return png_file(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_plot_arg(p: argparse.ArgumentParser) -> None:
    """``--plot FILE.png`` of ``evaluate``, ``infer`` and ``jobs fetch``."""
    p.add_argument("--plot", type=_png_file, metavar="FILE.png",
                   help="also draw the ROC curves and the confusion matrix of these images")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR",
                   help="folder with the MedMNIST .npz files (default: $HQCNN_DATA_ROOT, else "
                        "medmnist's folder with download)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the MD5 check of the data file (a re-packed file; its split "
                        "sizes must still be the official ones)")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser."""
    parser = _Parser(prog="hqcnn-qiskit",
                     description="Train and run the HQCNN (arXiv 2509.14277) on MedMNIST with Qiskit.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", help="train a model, select on validation AUC, test the best",
                       description="Train on the official train split, select the epoch with the "
                                   "best validation AUC, evaluate it on the test split.")
    p.add_argument("--dataset", required=True, help="2D MedMNIST flag, e.g. breastmnist")
    p.add_argument("--positive", type=int, nargs="+", metavar="CLASS", default=(),
                   help="binary cut: these class indices vs the rest (e.g. pathmnist --positive 8)")
    p.add_argument("--size", type=int, default=28, choices=(28, 64, 128, 224), help="image size")
    p.add_argument("--model", default="hqcnn", choices=("hqcnn", "classical"),
                   help="the HQCNN, or its classical twin (circuit -> Linear(4,8)+tanh)")
    p.add_argument("--backend", default="aer_ideal",
                   help="backend profile name or .toml path (see `hqcnn-qiskit backends`)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and shots")
    p.add_argument("--batch-size", type=_at_least_two, default=128, help="at least 2")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "step"),
                   help="step: lr x0.1 from half and from three quarters of the epochs on "
                        "(MedMNIST v2)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="Adam weight decay")
    p.add_argument("--augment", action="store_true",
                   help="randomly shift (up to 2 px) and mirror training images (no "
                        "mirroring where classes are body sides: OrganA/C/SMNIST)")
    p.add_argument("--layers", type=_positive_int, default=1, help="U3 + CNOT-ring repetitions")
    p.add_argument("--no-attention", action="store_true", help="drop the attention block")
    p.add_argument("--angle-scale", type=_positive_float, default=math.pi / 2,
                   help="s in theta = s*tanh(BN(h)) (default pi/2)")
    p.add_argument("--no-angle-norm", action="store_true",
                   help="the paper's literal angle map s*tanh(h), without the BatchNorm")
    p.add_argument("--limit-train", type=_at_least_two, metavar="N",
                   help="train on a fixed subset of N images")
    p.add_argument("--limit-eval", type=_at_least_two, metavar="N",
                   help="validate and test on fixed subsets of N images")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are drawn only when stderr is a terminal)")
    p.add_argument("--json", action="store_true", help="print metrics.json on stdout at the end")
    _add_data_args(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="ACC/AUC of a checkpoint on a split",
                       description="Evaluate a checkpoint on an official split, optionally on "
                                   "another backend than it was trained on.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="RUN_DIR/best.pt (the dataset and model come from it)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="official split to score")
    p.add_argument("--backend", help="run the circuit here (default: the training backend)")
    p.add_argument("--limit", type=_at_least_two, metavar="N", help="a fixed subset of N images")
    p.add_argument("--bootstrap", type=_resamples, default=2000, metavar="N",
                   help="resamples of the images behind the 95%% intervals (0: no "
                        "intervals; else >= 100)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_plot_arg(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (drawn only when stderr is a terminal; elsewhere a "
                        "line every 15 s of long work)")
    _add_data_args(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("backends", help="list the backend profiles",
                       description="List the shipped backend profiles.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_backends)

    p = sub.add_parser("datasets", help="list the MedMNIST datasets",
                       description="List the 2D MedMNIST datasets with task and classes.")
    p.set_defaults(func=_datasets)

    _add_job_commands(sub)
    return parser


def _add_job_commands(sub) -> None:
    """``infer`` and ``jobs`` (IBM Runtime inference)."""
    from .jobs_cli import add_commands

    add_commands(sub, _Parser)


def _version() -> str:
    from . import __version__

    return __version__


def show_progress(args) -> bool:
    """Progress bars only on a terminal: in a log file or a pipe their redraws pile up as
    ``\\r`` lines (``train`` still logs one line per epoch there)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def _train(args) -> int:
    from .data import DatasetSpec
    from .profiles import load_profile
    from .train import TrainConfig, train

    load_profile(args.backend)  # fail before loading data, a typo included
    if args.model == "classical" and args.backend != "aer_ideal":
        print(f"note: the classical twin has no circuit; --backend {args.backend} is not used",
              file=sys.stderr)
    config = TrainConfig(
        dataset=DatasetSpec(args.dataset, args.size, tuple(args.positive)),
        model=args.model, backend=args.backend, epochs=args.epochs, seed=args.seed,
        batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
        weight_decay=args.weight_decay,
        augment=args.augment, limit_train=args.limit_train, limit_eval=args.limit_eval,
        layers=args.layers, attention=not args.no_attention, angle_scale=args.angle_scale,
        angle_norm=not args.no_angle_norm,
    )
    metrics = train(config, args.out, data_root=args.data_root, resume=args.resume,
                    verify=not args.no_verify, progress=show_progress(args))
    if args.json:
        print(to_json(metrics))
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate_checkpoint

    if args.backend:
        from .profiles import load_profile

        load_profile(args.backend)
    bar = show_progress(args)  # else, unless --no-progress, a line every 15 s of long work
    quiet = bar or args.no_progress
    result = evaluate_checkpoint(args.checkpoint, split=args.split, backend=args.backend,
                                 data_root=args.data_root, limit=args.limit,
                                 verify=not args.no_verify, progress=bar, keep_scores=True,
                                 log=None if quiet else lambda line: print(line, file=sys.stderr))
    if args.backend and result["backend"].startswith("none"):
        print(f"note: {args.checkpoint} is the classical twin; --backend {args.backend} is not "
              "used", file=sys.stderr)
    report_metrics(result, resamples=args.bootstrap, as_json=args.json, on=result["backend"],
                   plot=args.plot)
    return 0


def report_metrics(result: dict, *, resamples: int, as_json: bool, on: str,
                   extra: dict | None = None, tail: str = "", plot: str | None = None) -> None:
    """Print ACC and AUC with 95% intervals from the evaluated images (``evaluate``, ``infer``
    and ``jobs fetch`` share it), and notes on stderr for what cannot be computed.

    Args:
        result: Metrics with ``keep_scores`` (``acc``, ``auc``, ``n``, ``split``, ``dataset``,
            ``backend``, ``task``, ``labels``, ``scores``).
        resamples: Bootstrap resamples for the intervals; 0 for none.
        as_json: One JSON object on stdout instead of the text line.
        on: What the text line says the images ran on.
        extra: Further keys of the JSON object.
        tail: Appended to the text line.
        plot: A PNG file for the ROC curves and the confusion matrix (needs ``class_names``
            in ``result``), drawn after the metrics are printed.
    """
    from .uncertainty import MIN_IMAGES, needs_resamples, split_interval_methods, split_intervals

    intervals = {}
    if resamples:
        intervals = split_intervals(result["task"], result["labels"], result["scores"],
                                    resamples=resamples)
        missing = [m.upper() for m, e in intervals.items()
                   if not e.defined and not math.isnan(result[m])]  # nan AUC: noted below
        if missing:
            why = (f"fewer than {MIN_IMAGES} images" if result["n"] < MIN_IMAGES
                   else "too many resamples lack a class")
            print(f"note: no 95% interval for {' and '.join(missing)}: {why}", file=sys.stderr)
    if math.isnan(result["auc"]):
        print(f"note: AUC is undefined: the {result['n']} images hold one class only",
              file=sys.stderr)
    shown_intervals = [m for m, e in intervals.items() if e.defined]
    drawn = resamples if any(needs_resamples(result["task"], m) for m in shown_intervals) else 0
    if as_json:
        print(to_json({**{k: result[k] for k in ("acc", "auc", "n", "split", "backend",
                                                   "dataset")},
                       **{f"{m}_95": [intervals[m].low, intervals[m].high]
                          if m in shown_intervals else None for m in ("acc", "auc")},
                       # resamples behind the intervals given (0: none; the exact ACC and the
                       # binary AUC intervals need none)
                       "bootstrap": drawn, **(extra or {})}))
    else:
        def shown(metric: str) -> str:
            e = intervals.get(metric)
            return f"{result[metric]:.4f}" + (f" [{e.low:.4f}, {e.high:.4f}]"
                                              if e and e.defined else "")

        print(f"{result['dataset']} {result['split']} on {on}: "
              f"acc {shown('acc')}  auc {shown('auc')}  (n={result['n']}){tail}")
        if shown_intervals:
            methods = split_interval_methods(result["task"], resamples, shown_intervals)
            print(f"[95% intervals from these {result['n']} images alone ({methods}); another "
                  "training seed can differ by more]")
    _draw(result, plot, on)


def _draw(result: dict, plot: str | None, on: str) -> None:
    """The ROC curves and confusion matrix of ``result`` into ``plot`` (if given)."""
    if not plot:
        return
    from .plots import roc_and_confusion, save_figure

    figure = roc_and_confusion(result["task"], result["labels"], result["scores"],
                               class_names=result["class_names"],
                               title=f"{result['dataset']} {result['split']} on {on}")
    print(f"wrote {save_figure(figure, plot)}", file=sys.stderr)


def _backends(args) -> int:
    from .profiles import list_profiles

    profiles = list_profiles()
    if args.json:
        print(to_json([{"name": p.name, "kind": p.kind, "device": p.device,
                        "description": p.description} for p in profiles]))
    else:
        width = max(len(p.name) for p in profiles)
        for p in profiles:
            print(f"{p.name:<{width}}  {p.description}")
    return 0


def _datasets(args) -> int:
    from .data import DatasetSpec, list_datasets

    for flag in list_datasets():
        spec = DatasetSpec(flag)
        print(f"{flag:<16} {spec.task:<28} {spec.num_outputs:>2} outputs  {spec.channels} channel(s)")
    return 0


def _chosen_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The (sub)command parser that ``args`` went through last, e.g. ``jobs fetch``'s."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None:
            return parser
        parser = subs[0].choices[chosen]


def _after_train(args) -> str:
    from pathlib import Path

    if (Path(args.out) / "last.pt").is_file():
        return "checkpoints so far are kept; `train --resume` continues"
    return "no epoch had finished, so there is nothing to resume: train again without --resume"


#: What a Ctrl-C leaves behind, per command: text, or a function of the arguments (infer and
#: jobs name their journaled jobs themselves).
AFTER_INTERRUPT = {
    "train": _after_train,
    "evaluate": "nothing was written",
}


def console_main() -> None:
    """The ``hqcnn-qiskit`` program: :func:`main` on the command line, then exit. After Ctrl-C
    it exits at once: a simulation still running on a worker thread (qiskit's primitive jobs
    run on ``concurrent.futures`` pool threads, which the interpreter joins at exit) would
    otherwise hold the exit for as long as it takes, 10-20 s on ``fake_brisbane``. Everything
    worth keeping is written by then (files are replaced atomically, journals fsynced), and
    the interrupt message is out."""
    code = main()
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more to say there
                pass
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run one ``hqcnn-qiskit`` command (``argv``: its arguments, else the command line) and
    return its exit code; for scripts and tests (the program itself is :func:`console_main`)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command they were given to, as its other errors are
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except HQCNNError as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "jobs_command", None))))
        print(f"hqcnn-qiskit {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        after = AFTER_INTERRUPT.get(args.command)
        after = after(args) if callable(after) else after
        print(f"hqcnn-qiskit {args.command}: interrupted" + (f" ({after})" if after else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    console_main()
