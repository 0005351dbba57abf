"""Playbooks: proven journeys with their templates, shipped as package data.

Each playbook is a folder `touchpoint/playbooks/<name>/` (the repo-root `playbooks/` is a
link to it) holding `journey.json` (a journey document whose key is the playbook's name),
`templates/<key>.json` (messaging templates, installed under their file name), `knobs.json`
(named values of the document a team tunes, each with its `demo` value) and `README.md`.
Pure: reading and knob substitution only; `touchpoint.commands.playbooks` installs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

NAMES = ("welcome", "abandoned-cart", "abandoned-browse", "review-request", "second-purchase",
         "replenishment", "win-back", "nps", "birthday")
_UNSET = object()


class PlaybookError(ValueError):
    """A playbook, knob or knob value that cannot be used; the message says which."""


@dataclass(frozen=True)
class Knob:
    name: str
    path: str
    description: str
    demo: Any = _UNSET

    @property
    def has_demo(self) -> bool:
        return self.demo is not _UNSET


@dataclass(frozen=True)
class Playbook:
    name: str
    journey: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    knobs: dict[str, Knob]
    readme: str
    # Discount code pools its templates hand out (`{{ 'pool' | code }}`): created on install
    # when missing, as messaging's `PUT /v1/code-pools/{key}` body (`generate` or `codes`).
    code_pools: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return str(self.journey.get("description") or self.journey.get("name") or "")

    def configured(self, *, demo: bool = False, values: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
        """The journey document with knobs applied: every `demo` value when `demo`, then
        `values` (knob name -> value; a null value removes an optional field)."""
        doc = copy.deepcopy(self.journey)
        chosen: dict[str, Any] = {}
        if demo:
            chosen |= {k.name: k.demo for k in self.knobs.values() if k.has_demo}
        for name, value in (values or {}).items():
            if name not in self.knobs:
                raise PlaybookError(f"{self.name}: no knob '{name}' (knobs: "
                                    f"{', '.join(self.knobs) or 'none'})")
            chosen[name] = value
        for name, value in chosen.items():
            set_path(doc, self.knobs[name].path, value)
        return doc


def _root() -> Traversable:
    return resources.files(__name__)


def names() -> list[str]:
    """The playbooks shipped, in the order of the public list."""
    present = {p.name for p in _root().iterdir() if p.is_dir() and (p / "journey.json").is_file()}
    return [n for n in NAMES if n in present] + sorted(present - set(NAMES))


def load(name: str) -> Playbook:
    """A shipped playbook by name, or a playbook folder on disk (`./my-playbooks/welcome`:
    a name with a `/`), laid out the same way."""
    if "/" in name or name in (".", ".."):
        folder = Path(name)
        if not (folder / "journey.json").is_file():
            raise PlaybookError(f"{name}: not a playbook folder (no journey.json)")
        return _load(folder.resolve().name, folder)
    if name not in names():
        raise PlaybookError(f"no playbook '{name}' (playbooks: {', '.join(names())})")
    return _load(name, _root() / name)


def _load(name: str, folder: Traversable) -> Playbook:
    journey = _json(folder / "journey.json")
    templates = {t.name.removesuffix(".json"): _json(t)
                 for t in sorted((folder / "templates").iterdir(), key=lambda t: t.name)
                 if t.name.endswith(".json")}
    raw_knobs = _json(folder / "knobs.json") if (folder / "knobs.json").is_file() else {}
    knobs = {k: Knob(k, v["path"], v.get("description", ""), v.get("demo", _UNSET))
             for k, v in raw_knobs.items()}
    readme = (folder / "README.md").read_text("utf-8") if (folder / "README.md").is_file() else ""
    pools = _json(folder / "code_pools.json") if (folder / "code_pools.json").is_file() else {}
    return Playbook(name, journey, templates, knobs, readme, pools)


def _json(item: Traversable) -> Any:
    text = item.read_text("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = item if isinstance(item, Path) else item.name
        raise PlaybookError(f"{where}: line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}") from None


def _child(node: Any, part: str, path: str) -> tuple[Any, Any]:
    """(container, key) of `part` under `node`: a dict key, a list index, or the list item
    whose `key` or `id` is `part` (stage keys and step ids)."""
    if isinstance(node, dict):
        return node, part
    if isinstance(node, list):
        if part.isdigit() and int(part) < len(node):
            return node, int(part)
        for index, item in enumerate(node):
            if isinstance(item, dict) and part in (item.get("key"), item.get("id")):
                return node, index
    raise PlaybookError(f"knob path {path}: nothing at '{part}'")


def get_path(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        container, key = _child(node, part, path)
        if isinstance(container, dict) and key not in container:
            raise PlaybookError(f"knob path {path}: nothing at '{part}'")
        node = container[key]
    return node


def set_path(doc: Any, path: str, value: Any) -> None:
    """Set the value at `path`; None removes a dict field (an optional setting turned off)."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        container, key = _child(node, part, path)
        node = container[key]
    container, key = _child(node, last, path)
    if value is None and isinstance(container, dict):
        container.pop(key, None)
    else:
        container[key] = value


def parse_knob(text: str) -> tuple[str, Any]:
    """`name=value` from the command line: JSON when it parses (numbers, null, objects),
    else the text itself (`PT30S`)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise PlaybookError(f"--knob {text!r}: write name=value")
    try:
        return name.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return name.strip(), raw
