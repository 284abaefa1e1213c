"""The type and range of every metalab setting, checked before anything touches the disk.

Hydra parses ``key=abc`` as text, ``key=[1,2]`` as a list and ``key=2.5`` as a float whatever
the key; without this table ``int()`` truncates ``seed=1.5`` to 1 and a string meets
arithmetic deep in the run as a traceback. Each entry says what a key holds, its bounds and
why; ``check_values`` refuses the first value outside them with one sentence naming the key,
the value, what is expected and the fix. Bounds that follow from the machine (memory) are in
``check_memory``: an episode batch or a model that cannot fit is refused with the estimate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from metalab.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range
TASKS_MAX = 1_000_000  # episodes per evaluation: the 95% interval is then below 0.1 points
STEPS_MAX = 100_000  # inner steps: 1,000x the longest adaptation in the papers (Reptile's 50)
LR_MAX = 1e4  # no paper's (effective) step comes near; larger ones diverge at once
DURATION = re.compile(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}")  # Lightning's max_time text
NAME_MAX = 200  # bytes of one path component (run_name is part of the run's folder name)


@dataclass(frozen=True)
class Spec:
    """What one setting holds: ``kind`` int, float, bool or text; bounds are inclusive unless
    ``above`` is set (then the value must be > ``above``)."""

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    nullable: bool = False
    hint: str = ""
    choices: tuple[Any, ...] = ()

    def expected(self) -> str:
        what = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "duration": "a duration DD:HH:MM:SS",
            "choice": "one of " + ", ".join(_choice(c) for c in self.choices),
        }.get(self.kind, "text")
        bounds = []
        if self.above is not None:
            bounds.append(f"> {_number(self.above)}")
        if self.minimum is not None:
            bounds.append(f">= {_number(self.minimum)}")
        if self.maximum is not None:
            bounds.append(f"<= {_number(self.maximum)}")
        text = what + (f" {' and '.join(bounds)}" if bounds else "")
        return text + (" (or null)" if self.nullable else "")


def _choice(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(value: float) -> str:
    """A bound as a reader writes it: 4294967295 and 1000000, not 4.29497e+09 and 1e+06."""
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def _int(minimum: float = 1, maximum: float | None = None, **kw: Any) -> Spec:
    return Spec("int", minimum=minimum, maximum=maximum, **kw)


def _positive(maximum: float | None = None, **kw: Any) -> Spec:
    return Spec("float", above=0, maximum=maximum, **kw)


def _unit(**kw: Any) -> Spec:
    return Spec("float", minimum=0, maximum=1, **kw)


BOOL = Spec("bool")
SEED = _int(0, SEED_MAX)
LR = _positive(LR_MAX, hint="a learning rate: e.g. 0.001 for Adam's outer step")
TASKS = _int(1, TASKS_MAX)
INNER_STEPS = _int(1, STEPS_MAX)

# metalab-train's settings (conf/train.yaml and its groups). Keys a composed config lacks are
# skipped; a test checks that every number and flag of every packaged preset is listed here.
TRAIN: dict[str, Spec] = {
    "seed": SEED,
    "vmap_chunk": _int(nullable=True),
    "vmap_memory_mib": _positive(nullable=True),
    "run_name": Spec("text"),
    "strategy": Spec("choice", choices=("auto", "loop", "vmap", "hybrid")),
    "strategy_cache": BOOL,
    "strategy_retime": BOOL,
    "memory_format": Spec("choice", choices=("auto", "channels_last", "contiguous")),
    "optimizer.name": Spec("choice", choices=("adam", "sgd")),
    "optimizer.scheduler": Spec("choice", choices=("none", "cosine", "linear", "step")),
    "optimizer.lr": LR,
    "optimizer.grad_clip": _positive(1e6, nullable=True, hint="null switches clipping off"),
    "optimizer.step_size": _int(nullable=True),
    "optimizer.gamma": Spec("float", above=0, maximum=1),
    "val.tasks": TASKS,
    "eval.tasks": TASKS,
    "eval.batch": _int(1, TASKS_MAX),
    "eval.curve_points": _int(1, nullable=True, hint="null scores every inner step"),
    "numerics.inner_grad_warn": _positive(),
    "numerics.inner_grad_every_n_steps": _int(),
    "trainer.devices": _int(1, 1024),
    "trainer.max_steps": _int(0),
    "trainer.max_cpu_seconds": _positive(nullable=True),
    "trainer.max_time": Spec("duration", nullable=True, hint="e.g. 00:12:00:00 for 12 hours"),
    "trainer.val_check_interval": _int(),
    "trainer.log_every_n_steps": _int(),
    "trainer.checkpoint_every_n_steps": _int(nullable=True),
    "trainer.checkpoint_every_minutes": _positive(
        525600, nullable=True, hint="minutes of wall clock between saves of last.ckpt"
    ),
    "trainer.enable_progress_bar": BOOL,
    "logger.csv": BOOL,
    "model.blocks": _int(1, 64),
    "model.channels": _int(1),
    "model.global_pool": BOOL,
    "model.head_init_std": _positive(1e3, nullable=True, hint="null keeps model.init's head"),
    "dataset.download": BOOL,
    "dataset.augment": Spec(
        "choice",
        choices=(False, True, "crop_flip", "crop_flip_jitter", "crop", "flip", "jitter", "koch"),
        hint="true = crop_flip: random crop + horizontal flip; crop_flip_jitter adds colour "
        "jitter; koch: Koch et al.'s affine distortions",
    ),
    "dataset.split_seed": SEED,
    "dataset.image_size": _int(1, 4096),
    "dataset.crop_padding": _int(0, 1024),
    "dataset.resize": Spec(
        "choice",
        choices=("stretch", "crop"),
        hint="stretch: the whole picture to the square; crop: shorter side, centre square",
    ),
    "dataset.ways": _int(1),
    "dataset.shots": _int(1),
    "dataset.queries": _int(1),
    "dataset.test_ways": _int(1),
    "dataset.test_shots": _int(1),
    "dataset.test_queries": _int(1),
    "dataset.jitter.brightness": Spec("float", minimum=0, maximum=100),
    "dataset.jitter.contrast": Spec("float", minimum=0, maximum=100),
    "dataset.jitter.saturation": Spec("float", minimum=0, maximum=100),
    "dataset.affine.probability": _unit(),
    "dataset.affine.rotation": Spec("float", minimum=0, maximum=180),
    "dataset.affine.shear": Spec("float", minimum=0, maximum=0.999),  # a shear of 1 folds
    "dataset.affine.translation": Spec("float", minimum=0, maximum=4096),
    "algorithm.meta_batch": _int(1),
    "algorithm.inner_steps": INNER_STEPS,
    "algorithm.eval_inner_steps": INNER_STEPS,
    "algorithm.inner_lr": LR,
    "algorithm.eval_inner_lr": _positive(LR_MAX, nullable=True),
    "algorithm.inner_batch": _int(nullable=True),
    "algorithm.first_order": BOOL,
    "algorithm.pretrain": BOOL,
    "algorithm.first_order_steps": _int(0),
    "algorithm.msl_anneal_steps": _int(0),
    "algorithm.multi_step_loss": BOOL,
    "algorithm.per_step_bn": BOOL,
    "algorithm.learnable_lr": BOOL,
    "algorithm.transductive": BOOL,
    "algorithm.fce": BOOL,
    "algorithm.outer_step_size": _positive(LR_MAX),
    "algorithm.adam_beta2": Spec("float", minimum=0, maximum=1, hint="Adam's beta2 is < 1"),
    "algorithm.adam_eps": _positive(1),
    "algorithm.hidden_size": _int(1, 65536),
    "algorithm.processing_steps": _int(1, STEPS_MAX),
    "algorithm.init_range": _positive(LR_MAX),
    "algorithm.preprocess_p": _positive(1e3),
    "algorithm.scale": _positive(1e6),
    "algorithm.shuffle_seed": SEED,
    "algorithm.adam_state": Spec("choice", choices=("carried", "fresh")),
    "algorithm.inner_solver": Spec("choice", choices=("proximal", "pullback")),
    "algorithm.num_context_params": _int(1, 1_000_000),
    "algorithm.film_block": _int(1, 64, hint="a block of model.features, 1-based"),
    "algorithm.lam": _positive(1e6, hint="iMAML's proximal strength, R2-D2's ridge penalty"),
    "algorithm.eval_lam": Spec("float", minimum=0, maximum=1e6, nullable=True),
    "algorithm.cg_steps": _int(0, STEPS_MAX, hint="0 takes the query gradient itself"),
    "algorithm.cg_damping": Spec("float", minimum=0, maximum=1e6),
    "algorithm.lam_damping": Spec("float", minimum=0, maximum=1e6),
    "algorithm.learn_lambda": BOOL,
    "algorithm.bias": Spec("float", minimum=-1e6, maximum=1e6),
    # MAML-RL (policy gradient inner loop, TRPO outer step)
    "algorithm.horizon": _int(1, 1_000_000, hint="steps per episode"),
    "algorithm.gamma": _unit(hint="the discount"),
    "algorithm.gae_lambda": _unit(hint="GAE's lambda (tau); 1: returns minus the baseline"),
    "algorithm.normalize_advantages": BOOL,
    "algorithm.baseline_reg": Spec("float", minimum=0, maximum=1e6),
    "algorithm.max_kl": _positive(1e3, hint="TRPO's trust region, 0.01 in the paper"),
    "algorithm.cg_iters": _int(1, STEPS_MAX),
    "algorithm.ls_max_steps": _int(1, STEPS_MAX),
    "algorithm.ls_backtrack_ratio": Spec("float", above=0, maximum=0.999),
    "algorithm.sampling_seed": SEED,
    "dataset.horizon": _int(1, 1_000_000, hint="steps per episode"),
    "dataset.goal_low": Spec("float", minimum=-1e6, maximum=1e6),
    "dataset.goal_high": Spec("float", minimum=-1e6, maximum=1e6),
    "model.init_std": _positive(1e6, hint="the policy's initial standard deviation"),
}

# metalab-eval's settings (conf/eval.yaml): null keeps what the checkpoint was trained with.
EVAL: dict[str, Spec] = {
    "eval.tasks": TASKS,
    "eval.batch": _int(1, TASKS_MAX),
    "eval.curve_points": _int(1, nullable=True),
    "ways": _int(nullable=True),
    "shots": _int(nullable=True),
    "queries": _int(nullable=True),
    "inner_steps": _int(1, STEPS_MAX, nullable=True),
    "inner_lr": _positive(LR_MAX, nullable=True),
    "transductive": Spec("bool", nullable=True),
    "lam": Spec("float", minimum=0, maximum=1e6, nullable=True),
    "seed": SEED,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def problem(spec: Spec, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec``; None when it does."""
    if value is None:
        return None if spec.nullable else "it cannot be null"
    if spec.kind == "bool":
        return None if isinstance(value, bool) else "it is not true or false"
    if spec.kind == "choice":
        known = any(value is c or (type(value) is type(c) and value == c) for c in spec.choices)
        return None if known else "it is not one of the choices"
    if spec.kind == "duration":
        if isinstance(value, str) and DURATION.fullmatch(value.strip()):
            return None
        return "it is not a duration"
    if spec.kind == "text":
        if not isinstance(value, str):
            return "it is not text"
        if len(value.encode()) > NAME_MAX or "/" in value or "\x00" in value:
            return f"it is not one folder name (no '/', at most {NAME_MAX} bytes)"
        return None
    if isinstance(value, (list, tuple, ListConfig, dict, DictConfig)):
        return "it is a list, not one number"
    if isinstance(value, str) or not _is_number(value):
        return "it is text, not a number"
    if spec.kind == "int" and not isinstance(value, int):
        whole = float(value).is_integer() and math.isfinite(value)
        return (
            f"it is not a whole number (write {int(value)} without a decimal point)"
            if whole
            else "it is not a whole number (metalab does not round it)"
        )
    if not math.isfinite(float(value)):
        return "it is not finite"
    if spec.above is not None and not value > spec.above:
        return f"it must be > {_number(spec.above)}"
    if spec.minimum is not None and value < spec.minimum:
        return f"it must be >= {_number(spec.minimum)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"it must be <= {_number(spec.maximum)}"
    return None


def refuse(key: str, value: Any, spec: Spec, why: str) -> ConfigError:
    shown = value if not isinstance(value, str) else repr(value)
    if len(str(shown)) > 60:
        shown = f"{str(shown)[:40]}...({len(str(value))} characters)"
    hint = f" ({spec.hint})" if spec.hint else ""
    reason = "" if why.startswith("it must be") else f"{why}; "
    return ConfigError(
        f"{key}={shown}: {reason}expected {spec.expected()}{hint}. Fix it on the command line "
        "(or in the preset) and run again."
    )


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value) without resolving anything else; a key whose interpolation fails is
    reported as such."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        try:
            node = node[part]
        except Exception as error:  # noqa: BLE001 - an interpolation that cannot resolve
            raise ConfigError(f"{key} cannot be resolved ({error}): fix its value.") from None
    if isinstance(node, (DictConfig, ListConfig)):
        return True, OmegaConf.to_container(node, resolve=True)
    return True, node


def _interpolated(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` takes its value from another key (``${...}``)."""
    *parents, last = key.split(".")
    node: Any = cfg
    for part in parents:
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return isinstance(node, DictConfig) and last in node and OmegaConf.is_interpolation(node, last)


def check_values(cfg: DictConfig, specs: dict[str, Spec] | None = None) -> None:
    """Every listed key the config has, against its spec; the first misfit is refused. Keys
    that copy another (``algorithm.horizon: ${dataset.horizon}``) come last, so a bad value
    is named by the key that holds it."""
    listed = TRAIN if specs is None else specs
    order = sorted(listed, key=lambda k: _interpolated(cfg, k))
    for key in order:
        spec = listed[key]
        present, value = _lookup(cfg, key)
        if not present:
            continue
        why = problem(spec, value)
        if why is not None:
            raise refuse(key, value, spec, why)


def check_override_value(key: str, value: Any, specs: dict[str, Spec] | None = None) -> None:
    """One command-line value (each value of a sweep), before Hydra composes or launches."""
    spec = (TRAIN if specs is None else specs).get(key)
    if spec is None or (isinstance(value, str) and re.search(r"\$\{", value)):
        return  # not ours, or an interpolation: checked once composed
    why = problem(spec, value)
    if why is not None:
        raise refuse(key, value, spec, why)


def numeric_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every key of a config that holds a number or a flag (for the schema's coverage test)."""
    for key in cfg:
        value = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            yield from numeric_keys(value, f"{full}.")
            continue
        try:
            resolved = cfg[key]
        except Exception:  # noqa: BLE001
            continue
        if isinstance(resolved, (bool, int, float)):
            yield full


# --- bounds that follow from the machine ----------------------------------------------------


def available_bytes() -> int | None:
    """Memory the machine can still give (Linux's MemAvailable); None where it is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gib(n: float) -> str:
    """Bytes in the largest unit that keeps a digit before the point."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:.0f} bytes"


def check_memory(cfg: DictConfig, example_numel: int, parameters: int | None) -> None:
    """Refuse an episode batch or model that cannot fit in memory, with the estimate (a lower
    bound: the tensors alone, in float32, before any activation or gradient)."""
    free = available_bytes()
    if free is None:
        return
    dataset = cfg.dataset
    ways = int(dataset.get("ways", 1) or 1)
    test_ways = int(dataset.get("test_ways", ways) or ways)
    per_task = ways * (int(dataset.shots) + int(dataset.queries)) * example_numel * 4
    per_test_task = (
        test_ways * (int(dataset.test_shots) + int(dataset.test_queries)) * example_numel * 4
    )
    episodes = [
        ("", ways, int(dataset.shots), int(dataset.queries), per_task),
        ("test_", test_ways, int(dataset.test_shots), int(dataset.test_queries), per_test_task),
    ]
    for prefix, n, shots, queries, size in episodes:
        if size > free:  # one episode alone: name the keys that size it
            raise ConfigError(
                f"dataset.{prefix}shots={shots}, dataset.{prefix}queries={queries}"
                + (f", dataset.{prefix}ways={n}" if "ways" in dataset else "")
                + f": one episode of {n} x {shots + queries} examples of {example_numel:,} "
                f"values needs {_gib(size)} but the machine has {_gib(free)} available: lower "
                "them (or dataset.image_size)."
            )
    batches = [
        ("algorithm.meta_batch", int(cfg.algorithm.meta_batch), per_task),
        ("eval.batch", int(cfg.eval.batch), per_test_task),
    ]
    for key, tasks, size in batches:
        need = tasks * size
        if need > free:
            raise ConfigError(
                f"{key}={tasks}: one batch of {tasks} episodes needs at least {_gib(need)} "
                f"({_gib(size)} per episode) but the machine has {_gib(free)} available: lower "
                f"{key} to at most {max(free // max(size, 1), 1)}."
            )
    if parameters is not None:
        need = parameters * 4 * 4  # weights, gradient and Adam's two moments
        if need > free:
            raise ConfigError(
                f"model={cfg.model.name} with these settings has {parameters:,} parameters, "
                f"needing at least {_gib(need)} with gradients and optimiser state, but the "
                f"machine has {_gib(free)} available: lower model.channels (or model.hidden)."
            )
