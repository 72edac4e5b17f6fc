"""``python -m hico.cli``: the ``hico`` command (as ``torchrun ... -m hico.cli pretrain`` starts it)."""

import sys

from hico.cli import main

sys.exit(main())
