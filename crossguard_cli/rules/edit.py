"""Editing a rules file's text in place: new thresholds, everything else as the user wrote it.

`crossguard eval --write-rules` promises the comments, key order and quoting of the rules file
are kept (it writes thresholds, and with `--target-accuracy` margins too), so the file is
edited as text at the positions YAML reports, not re-dumped. Values are written as the shortest
decimal that YAML reads back as exactly the suggested float, so `batch` with the tuned file
decides exactly the records the report counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import yaml

from crossguard_cli.errors import RulesError, did_you_mean

_EDITABLE = ("threshold", "margin")  # the values `eval --write-rules` tunes


def format_threshold(t: float) -> str:
    """Shortest text that YAML reads back as exactly `t` (positional: PyYAML reads '1e-05' as a string)."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {t}")
    return np.format_float_positional(float(t), unique=True, trim="0")


def _node_keys(node: Any) -> dict[str, tuple[Any, Any]]:
    """{key: (key node, value node)} of a YAML mapping node's plain keys; {} for anything else."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def set_thresholds(text: str, thresholds: Mapping[str, float], where: str = "rules") -> str:
    """Rules YAML text with new per-rule thresholds, editing only those values (comments stay)."""
    return set_settings(text, {name: {"threshold": t} for name, t in thresholds.items()}, where)


def set_settings(text: str, settings: Mapping[str, Mapping[str, float]], where: str = "rules") -> str:
    """Rules YAML text with new per-rule `threshold` / `margin` values, editing only those (comments stay).

    Replaces each named rule's value in place, or adds `KEY: X` after its `name:` line (a
    value inherited from `defaults:` is then overridden for that rule only). The result is
    checked by re-parsing it: an edit that does not give exactly the old rules with the new
    values is refused (RulesError), never written, and never replaced by a dump that would
    lose the comments.
    """
    try:
        root, data = yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RulesError(f"not valid YAML: {' '.join(str(e).split())}", where) from None
    rules_node = _node_keys(root).get("rules", (None, None))[1]
    if not isinstance(rules_node, yaml.SequenceNode):
        raise RulesError("no 'rules' list to tune", where)
    newline = "\r\n" if "\r\n" in text else "\n"
    edits: list[tuple[int, int, str]] = []
    found: set[str] = set()
    names: list[str] = []
    for i, item in enumerate(rules_node.value):
        keys = _node_keys(item)
        name = keys["name"][1].value if "name" in keys else None
        names.append(str(name))
        if name not in settings:
            continue
        found.add(name)
        added = []
        for key, number in settings[name].items():
            if key not in _EDITABLE:
                raise ValueError(f"cannot set {key!r}; only {', '.join(_EDITABLE)}")
            value = format_threshold(number)
            data["rules"][i][key] = float(value)
            if key in keys:
                node = keys[key][1]
                edits.append((node.start_mark.index, node.end_mark.index, value))
            else:
                added.append((key, value))
        if not added:
            continue
        if item.flow_style:
            end = keys["name"][1].end_mark.index
            edits.append((end, end, "".join(f", {key}: {value}" for key, value in added)))
        else:
            key_node, value_node = keys["name"]
            eol = text.find("\n", value_node.end_mark.index)
            lines = [f"{' ' * key_node.start_mark.column}{key}: {value}" for key, value in added]
            at = len(text) if eol < 0 else eol + 1
            edits.append((at, at, "".join(newline + line for line in lines) if eol < 0
                          else "".join(line + newline for line in lines)))
    missing = sorted(set(settings) - found)
    if missing:
        raise RulesError(f"no rule named {missing[0]!r} to tune{did_you_mean(missing[0], names)}", where)
    out = text
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        out = out[:start] + new + out[end:]
    try:
        verified = yaml.safe_load(out) == data
    except yaml.YAMLError:
        verified = False
    if not verified:
        raise RulesError("cannot set the thresholds in this file's text without changing something else "
                         "(anchors or unusual layout?); nothing written: set them by hand from the report", where)
    return out


__all__ = ["format_threshold", "set_settings", "set_thresholds"]
