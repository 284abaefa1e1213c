"""Names for job directories and W&B runs, built from a job's command-line overrides.

Hydra's ``override_dirname`` can hold '/' (a path value would nest directories) and can
grow past the 255-byte file-name limit of common file systems; ``job_dirname`` keeps it
one readable path component that is still unique (a hash of the full string is appended
when it has to be shortened). It is registered as the OmegaConf resolver
``metalab.dirname`` used by ``hydra.sweep.subdir`` in conf/train.yaml.
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_BYTES = 200  # of the name, leaving room below the 255-byte limit for the job number


def job_dirname(overrides: str, max_bytes: int = MAX_BYTES) -> str:
    """One safe path component for an override string such as ``algorithm=maml,seed=1``."""
    name = overrides.replace("/", "%2F").replace("\0", "") or "defaults"
    if name in (".", ".."):
        name = f"%2E{name[1:]}"
    if len(name.encode()) <= max_bytes:
        return name
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
    while len(name.encode()) > max_bytes - len(digest) - 1:
        name = name[:-1]
    return f"{name}~{digest}"


def register_resolvers() -> None:
    """Idempotent: Hydra's worker processes import this module again."""
    if not OmegaConf.has_resolver("metalab.dirname"):
        OmegaConf.register_new_resolver("metalab.dirname", job_dirname)


register_resolvers()
