"""Sub-commands of this capability (filled in as the capability is built)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add this capability's sub-commands to the `counterparty` parser."""
