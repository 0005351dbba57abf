"""Pure logic of the console: no FastAPI, no HTTP."""
