"""hqcnn-qiskit: the HQCNN of arXiv 2509.14277 on MedMNIST, with Qiskit from statevector to QPU.

Public API (the CLI is a thin layer over these):

- models: :func:`get_model`, :func:`list_models`, :class:`HQCNN`, :class:`ModelConfig`
- data: :class:`DatasetSpec`, :func:`load_split`
- backends: :func:`get_backend`, :func:`list_backends`
- training and evaluation: :class:`TrainConfig`, :func:`train`, :func:`evaluate_checkpoint`,
  :func:`load_checkpoint_model`
"""

from .errors import BackendError, CheckpointError, ConfigError, DataError, HQCNNError

__version__ = "0.1.0"

# Imported on first use, so that the command line starts without loading torch and qiskit.
_FROM_MODEL = ("HQCNN", "ModelConfig", "count_parameters", "get_model", "hqcnn_circuit",
               "list_models")


def __getattr__(name: str):
    if name in _FROM_MODEL:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "HQCNN",
    "ModelConfig",
    "count_parameters",
    "get_model",
    "hqcnn_circuit",
    "list_models",
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
