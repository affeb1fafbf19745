"""``python -m hqcnn_qiskit`` is the ``hqcnn-qiskit`` command."""

from .cli import console_main

console_main()
