"""The `touchpoint` command line and the `touchpoint up` launcher.

Modules: `cli` (the typer app), `up` (the launcher), `supervisor` (child processes),
`embedded` (Postgres and Tansu from their wheels), `client` (HTTP and topic client of a
running stack), `demo`. Nothing here is imported by the services.
"""

__version__ = "0.1.0"
