"""Sub-commands of `touchpoint`, one module per group (each exports a typer `app`).

`touchpoint/cli.py` registers them; the pieces every command shares are in `common`.
"""
