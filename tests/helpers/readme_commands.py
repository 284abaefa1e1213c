"""The shell commands of README.md's usage blocks, and how a test runs each one cheaply.

``collect`` reads the fenced code blocks (```bash, ```sh or plain ```), joins backslash
continuations, drops comments and keeps every command (a part of an ``&&`` chain) that starts
with metalab-train, metalab-eval, metalab-compare, ``python -m metalab...`` or runs the
metalab or metalab-gpu service of ``docker compose`` (whose entrypoint is metalab-train). A
line that only mentions a command further on (the Layout block's
``train.py  metalab-train; ...``) is not one.

``Command.compose_only`` says why a command is composed (``--cfg job``) instead of run: it
needs a GPU, SLURM, W&B online or Docker, or a data set that is not under ``$METALAB_DATA``.
The rest run with ``debug=tiny`` (conf/debug/tiny.yaml); the rules that make them cheap and
point their placeholders at this test's own outputs are the functions below.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.helpers.paths import CONF, README

TINY = CONF / "debug" / "tiny.yaml"

SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
TOOLS = {"metalab.train": "metalab-train", "metalab.evaluate": "metalab-eval",
         "metalab.compare.cli": "metalab-compare"}  # fmt: skip
# Why a command is composed only, by the overrides (or environment) that ask for it.
NEEDS = [
    ("needs a GPU", re.compile(r"^(trainer=(gpu|ddp)|trainer\.accelerator=(gpu|cuda))$")),
    ("needs SLURM", re.compile(r"^hydra/launcher=(slurm|submitit_slurm)$")),
    ("needs W&B online", re.compile(r"^(logger\.wandb\.mode|WANDB_MODE)=online$")),
]
# Data sets by a word in the command (an experiment, dataset, reproduce or search preset's
# name) and the folder under $METALAB_DATA that holds them (conf/dataset/*.yaml's root).
DATA = {"omniglot": "omniglot", "miniimagenet": "miniimagenet", "cifar_fs": "cifar100",
        "fc100": "cifar100", "imagefolder": "imagefolder", "tieredimagenet": "tieredimagenet",
        "cub": "cub"}  # fmt: skip
# metalab-eval has no debug group (conf/eval.yaml): its two test-size keys, cut here.
EVAL_TINY = ("eval.tasks=2", "eval.batch=2")
SEARCH_TRIALS = 2  # an Optuna search (hparams_search=...) runs this many trials
PRINTS_ONLY = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"}


@dataclass(frozen=True)
class Command:
    """One documented command: ``tool`` (metalab-train, metalab-eval, metalab-compare or a
    ``python -m`` module), its arguments as the shell passes them, and its environment."""

    text: str
    tool: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    docker: bool = False
    module: str | None = None  # python -m <module> that is not one of the console scripts
    line: int = 0

    @property
    def multirun(self) -> bool:
        return "-m" in self.args or "--multirun" in self.args

    @property
    def prints_only(self) -> bool:
        """--cfg, --help, --info: the command trains nothing, so it runs as written."""
        return any(a in PRINTS_ONLY for a in self.args)

    def compose_only(self, data_root: Path | None) -> str | None:
        """Why this command is only composed, or None when it runs."""
        why = ["needs Docker"] if self.docker else []
        why += [w for w, pattern in NEEDS if any(pattern.match(a) for a in (*self.args, *self.env))]
        if not why and self.tool == "metalab-train" and not self.prints_only:
            folders = {folder for word, folder in DATA.items() if any(word in a for a in self.args)}
            why += [
                f"no {folder}/ under METALAB_DATA"
                for folder in sorted(folders)
                if data_root is None or not (data_root / folder).is_dir()
            ]
        return ", ".join(why) or None

    def short(self) -> str:
        words = " ".join(("docker" if self.docker else self.tool, *self.args))
        return words if len(words) <= 80 else words[:77] + "..."


@dataclass
class _Block:
    lang: str
    start: int
    lines: list[str] = field(default_factory=list)


def shell_blocks(text: str) -> list[_Block]:
    """The fenced blocks whose language is a shell's (or none)."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)\s*$", line)
        if fence and current is None:
            current = _Block(fence.group(1).lower(), number + 1)
        elif fence:
            if current.lang in SHELL_FENCES:
                blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    return blocks


def logical_lines(block: _Block) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    joined, pending, first = [], "", 0
    for offset, line in enumerate(block.lines):
        if not pending:
            first = block.start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((first, pending + line))
        pending = ""
    if pending:
        joined.append((first, pending))
    return joined


def parse(tokens: list[str], text: str, line: int) -> Command | None:
    """A metalab command from one part of a shell line, or None."""
    env = []
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        env.append(tokens.pop(0))
    if not tokens:
        return None
    head = tokens[0]
    if head in TOOLS.values():
        return Command(text, head, tuple(tokens[1:]), tuple(env), line=line)
    if head in ("python", "python3") and len(tokens) > 2 and tokens[1] == "-m":
        module = tokens[2]
        if module in TOOLS:
            return Command(text, TOOLS[module], tuple(tokens[3:]), tuple(env), line=line)
        if module.split(".")[0] == "metalab":
            return Command(text, module, tuple(tokens[3:]), tuple(env), module=module, line=line)
    if tokens[:2] == ["docker", "compose"] and "run" in tokens:
        rest = tokens[tokens.index("run") + 1 :]
        while rest and rest[0].startswith("-"):
            rest.pop(0)  # --rm, -T (run's flags that take no value)
        # docker/Dockerfile: ENTRYPOINT ["metalab-train"]; the CPU and GPU services
        if rest and rest[0] in ("metalab", "metalab-gpu"):
            return Command(text, "metalab-train", tuple(rest[1:]), tuple(env), True, line=line)
    return None


def collect(text: str | None = None) -> list[Command]:
    """Every metalab command of the README's shell blocks, each once, in order."""
    text = README.read_text() if text is None else text
    commands, seen = [], set()
    for block in shell_blocks(text):
        for number, line in logical_lines(block):
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue  # not shell (a file listing)
            part: list[str] = []
            for token in [*tokens, "&&"]:
                if token not in ("&&", "||", ";"):
                    part.append(token)
                    continue
                command = parse(part, shlex.join(part), number) if part else None
                part = []
                if command is not None and command.text not in seen:
                    seen.add(command.text)
                    commands.append(command)
    return commands


# --- making a documented command cheap and pointing it at this test's outputs --------------


def tiny_values() -> dict[str, str]:
    """conf/debug/tiny.yaml as dotted key -> override value (its defaults list aside)."""

    def flat(node: dict, prefix: str = "") -> dict[str, str]:
        out = {}
        for key, value in node.items():
            if key == "defaults":
                continue
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = yaml.safe_dump(value).strip().removesuffix("\n...")
        return out

    return flat(yaml.safe_load(TINY.read_text()))


def split_override(arg: str) -> tuple[str, str] | None:
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    return key.lstrip("+~"), value


def first_job(args: tuple[str, ...]) -> list[str]:
    """One job of a sweep, for --cfg job (Hydra composes no sweep): the first value of each
    ``a,b,c`` list; overrides that are sweep functions (interval(...), tag(...)) are dropped."""
    out = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        kv = split_override(arg)
        if kv is None:
            out.append(arg)
        elif re.match(r"^\w+\(", kv[1]):
            continue
        elif "," in kv[1] and not kv[1].startswith(("[", "{", "'", '"')):
            out.append(f"{arg.split('=', 1)[0]}={kv[1].split(',')[0]}")
        else:
            out.append(arg)
    return out


def tiny_train_args(args: tuple[str, ...]) -> list[str]:
    """A training command cut to seconds: debug=tiny appended, and what would outweigh it:
    a value the command gives to a key tiny.yaml sets takes tiny's value (the key is kept, so
    it is still checked), a sweep over seeds runs its first seed (seeds change no code path),
    and an Optuna search runs SEARCH_TRIALS trials."""
    tiny = tiny_values()
    out = []
    for arg in args:
        kv = split_override(arg)
        if kv and kv[0] in tiny:
            arg = f"{arg.split('=', 1)[0]}={tiny[kv[0]]}"
        elif kv and kv[0] == "seed" and "," in kv[1]:
            arg = f"seed={kv[1].split(',')[0]}"
        elif kv and kv[0] == "hydra.sweeper.n_trials":
            continue
        out.append(arg)
    if any((split_override(a) or ("",))[0] == "hparams_search" for a in args):
        out.append(f"hydra.sweeper.n_trials={SEARCH_TRIALS}")
    reproduce = [v for k, v in filter(None, map(split_override, args)) if k == "reproduce"]
    if reproduce:  # a paper's whole table: its first REPRODUCE_JOBS presets (each preset is
        # trained on its own in tests/configs/test_presets_run.py)
        out.append(f"hydra.sweeper.params.experiment='{','.join(table_presets(reproduce[0]))}'")
    return [*out, "debug=tiny"]


REPRODUCE_JOBS = 2


def table_presets(name: str) -> list[str]:
    """The first REPRODUCE_JOBS experiment presets a conf/reproduce/ sweep runs."""
    sweep = yaml.safe_load((CONF / "reproduce" / f"{name}.yaml").read_text())
    return str(sweep["hydra"]["sweeper"]["params"]["experiment"]).split(",")[:REPRODUCE_JOBS]
