"""Config dataclass fields that document themselves.

Every config field carries its help text in `metadata["help"]` (`documented`); the CLI
(tyro, in `lwd.cli`) shows it with the default under `lwd COMMAND --help`, so each knob
is documented where it is defined.
"""

from __future__ import annotations

import dataclasses


def documented(default, help: str):
    """A dataclass field whose help text becomes its command-line `--help`."""
    return dataclasses.field(default=default, metadata={"help": help})
