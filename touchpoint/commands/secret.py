"""`touchpoint secret rotate`: a new installation secret for `touchpoint up`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from touchpoint import installation

app = typer.Typer(no_args_is_help=True, help="The installation secret of `touchpoint up`.")


@app.command()
def rotate(
    state_dir: Annotated[Path, typer.Option(help="Where `up` keeps its state.")] = Path(
        ".touchpoint"),
    keep: Annotated[int, typer.Option(min=1, max=50,
                                      help="Earlier secrets kept for verifying.")] = 5,
) -> None:
    """Make a new secret current; earlier ones keep verifying links already mailed."""
    kept = installation.rotate_secret(state_dir, keep=keep)
    Console().print(f"new secret in {state_dir / installation.FILE_NAME} ({kept} earlier kept "
                    f"for verifying); restart `touchpoint up` to use it", soft_wrap=True)
