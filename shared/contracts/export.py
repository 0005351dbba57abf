"""Write every topic's JSON Schema to docs/schemas/: `python -m shared.contracts.export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.contracts.registry import TOPICS


def render_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, for every topic that has a model."""
    out: dict[str, str] = {}
    for contract in TOPICS.values():
        if contract.model is None:
            continue
        schema = contract.model.model_json_schema(mode="serialization")
        schema["$id"] = f"touchpoint/{contract.schema_name()}"
        schema["description"] = contract.description
        out[contract.schema_name()] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main(target: str = "docs/schemas") -> None:
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in render_schemas().items():
        (folder / name).write_text(text)
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
