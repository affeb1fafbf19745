"""``python -m hqcnn_qiskit`` is the ``hqcnn-qiskit`` command."""

import sys

from .cli import main

sys.exit(main())
