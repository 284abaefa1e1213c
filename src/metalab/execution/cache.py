"""``strategy=auto``'s choice, remembered per machine and workload.

Why: auto times loop, vmap and hybrid on the first meta-batch of every new process, 15-20 s
of a 37-second smoke run, and the answer depends only on the machine and the workload. So it
is measured once, kept in metalab's cache folder (``$METALAB_CACHE``, else
``~/.cache/metalab``, as the decoded data and the native kernel are) and reused by every
later run of the same workload on the same machine; ``strategy_retime=true`` times the
candidates again and replaces the entry.

The key holds the machine (CPU model, logical cores, torch version and threads, accelerator)
and the workload (meta-gradient or per-task map; the algorithm and its scalar settings; the
parameters' names, shapes and dtypes; the batch's shapes; the candidates). A cache that
cannot be read or written costs a measurement, never a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from metalab.data.cache import default_cache_folder
from metalab.objectives import split_objective
from metalab.results import cpu_model

log = logging.getLogger(__name__)

FILE = "strategy-auto.json"
VERSION = 2  # bump when what a choice means changes (a new candidate, another timing rule)


def cache_file() -> Path:
    return default_cache_folder() / FILE


def machine(device: torch.device) -> dict[str, Any]:
    """What makes one machine's timings differ from another's."""
    facts: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def _settings(owner: Any) -> dict[str, Any]:
    """An algorithm's scalar settings (inner steps, rates, first order ...)."""
    found = getattr(owner, "__dict__", {})
    return {k: v for k, v in sorted(found.items()) if isinstance(v, (bool, int, float, str))}


def workload_key(
    what: str,
    fn: Any,
    params: dict[str, torch.Tensor],
    batch: Any,
    candidates: list[str],
    settings: dict[str, Any],
) -> str:
    owner = getattr(fn, "__self__", None)
    workload = {
        "version": VERSION,
        "what": what,
        "function": getattr(fn, "__qualname__", repr(fn)),
        "algorithm": type(owner).__qualname__ if owner is not None else None,
        "adapt_then_score": split_objective(fn) is not None,
        "settings": _settings(owner) if owner is not None else {},
        "params": [(k, list(p.shape), str(p.dtype)) for k, p in params.items()],
        "support": list(batch.support_x.shape),
        "query": list(batch.query_x.shape),
        "candidates": candidates,
        "strategy_settings": settings,
        "machine": machine(batch.support_x.device),
    }
    text = json.dumps(workload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read(path: Path) -> dict[str, Any]:
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.info("strategy=auto: the cached choices in %s are unreadable (%s)", path, error)
        return {}
    return entries if isinstance(entries, dict) else {}


def lookup(key: str) -> dict[str, Any] | None:
    entry = _read(cache_file()).get(key)
    return entry if isinstance(entry, dict) and "chosen" in entry else None


def remember(key: str, entry: dict[str, Any]) -> None:
    """Adds one choice to the file (temp file + rename: a reader never sees half a file)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read(path)
        entries[key] = {**entry, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(entries, handle, indent=1, sort_keys=True)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as error:
        log.info("strategy=auto: could not keep the choice in %s (%s)", path, error)
