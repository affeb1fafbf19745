"""hqcnn-qiskit: the HQCNN of arXiv 2509.14277 on MedMNIST, with Qiskit from statevector to QPU.

Public API (the CLI is a thin layer over these), importable from the package:

- models: :func:`get_model`, :func:`list_models`, :class:`HQCNN`, :class:`ModelConfig`,
  :func:`count_parameters`, :func:`hqcnn_circuit`
- data: :class:`DatasetSpec`, :func:`load_split`
- backends: :func:`get_backend`, :func:`list_backends`
- training and evaluation: :class:`TrainConfig`, :func:`evaluate_checkpoint`,
  :func:`load_checkpoint_model`
- errors: :class:`HQCNNError` and its subclasses

The training function is imported from its module, ``from hqcnn_qiskit.train import train``:
``hqcnn_qiskit.train`` is that submodule, so the package does not also export a function of
the same name.

Everything that needs torch or qiskit is imported on first use, so ``import hqcnn_qiskit`` and
the command line start without them.
"""

import importlib

from .errors import BackendError, CheckpointError, ConfigError, DataError, HQCNNError

__version__ = "0.1.0"

# Imported on first use, so that the command line starts without loading torch and qiskit.
_LAZY = {
    **dict.fromkeys(("HQCNN", "ModelConfig", "count_parameters", "get_model", "hqcnn_circuit",
                     "list_models"), "model"),
    **dict.fromkeys(("DatasetSpec", "load_split"), "data"),
    "TrainConfig": "train",
    **dict.fromkeys(("evaluate_checkpoint", "load_checkpoint_model"), "evaluate"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "HQCNN",
    "ModelConfig",
    "count_parameters",
    "get_model",
    "hqcnn_circuit",
    "list_models",
    "DatasetSpec",
    "load_split",
    "TrainConfig",
    "evaluate_checkpoint",
    "load_checkpoint_model",
    "get_backend",
    "list_backends",
    "HQCNNError",
    "DataError",
    "CheckpointError",
    "BackendError",
    "ConfigError",
]


def get_backend(backend="aer_ideal"):
    """See :func:`hqcnn_qiskit.backends.get_backend`."""
    from .backends import get_backend as _get_backend

    return _get_backend(backend)


def list_backends():
    """See :func:`hqcnn_qiskit.backends.list_backends`."""
    from .backends import list_backends as _list_backends

    return _list_backends()
