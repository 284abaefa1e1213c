"""The one LightningModule: a bilevel meta-training step with manual optimisation.

Lightning owns the loop, devices, checkpoints and logging; this module owns what happens
in one outer step: the algorithm's ``outer_step`` (its per-task objective run over the
meta-batch by the chosen execution strategy and back-propagated with ``manual_backward``,
or its own update), then clipping and the optimiser's step. It reaches the algorithm only
through the contract of ``metalab.algorithms.base.Algorithm``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from metalab.algorithms import build_algorithm, has_fixed_head
from metalab.algorithms.base import Algorithm
from metalab.data.tasks import TaskBatch
from metalab.distributed import gather_tasks
from metalab.errors import MetalabError
from metalab.execution import build_strategy
from metalab.execution.threads import Replicable
from metalab.inner_loop import InnerLoop, scored_steps
from metalab.losses import TASK_KINDS
from metalab.models import build_model
from metalab.models.layout import apply_memory_format, resolve_memory_format
from metalab.numerics import NonFiniteLossError, non_finite_error
from metalab.precision import autocast_off
from metalab.results import mean_and_ci95
from metalab.rng import restore_rng_states, rng_states

__all__ = ["MetaLearner", "NonFiniteLossError"]

OUTER_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def algorithm_state(algorithm: Algorithm) -> dict:
    """State an algorithm keeps outside its parameters (Reptile's carried inner Adam)."""
    return algorithm.checkpoint_state()


def load_algorithm_state(algorithm: Algorithm, metalab_state: dict | None) -> None:
    """Restore ``algorithm_state`` from a checkpoint's ``metalab`` entry, if it has one (a
    checkpoint from before algorithms kept state has none)."""
    if metalab_state and metalab_state.get("algorithm"):
        algorithm.load_checkpoint_state(metalab_state["algorithm"])


class MetaLearner(pl.LightningModule):
    def __init__(self, cfg: dict[str, Any], in_shape: tuple[int, ...], out_features: int):
        super().__init__()
        self.save_hyperparameters(logger=False)  # W&B gets the resolved config itself
        self.automatic_optimization = False
        self.cfg = OmegaConf.create(cfg)
        self.kind = TASK_KINDS[self.cfg.dataset.task]
        self.model = build_model(
            self.cfg.model,
            tuple(in_shape),
            out_features,
            head=has_fixed_head(self.cfg.algorithm.name),
        )
        self.memory_format = resolve_memory_format(
            str(self.cfg.get("memory_format", "auto")), str(self.cfg.trainer.accelerator)
        )
        apply_memory_format(self.model, self.memory_format)
        self.algorithm: Algorithm = build_algorithm(
            self.cfg.algorithm, InnerLoop(self.model, self.kind)
        )
        chunk, budget = self.cfg.vmap_chunk, self.cfg.get("vmap_memory_mib")
        self.strategy = build_strategy(
            str(self.cfg.strategy),
            None if chunk is None else int(chunk),
            None if budget is None else float(budget),
            str(self.cfg.trainer.accelerator),
            cache=bool(self.cfg.get("strategy_cache", True)),
            retime=bool(self.cfg.get("strategy_retime", False)),
        )
        self._eval_values: list[dict[str, torch.Tensor]] = []
        self.test_summary: dict[str, Any] | None = None
        self.train_batches = 0  # meta-batches trained on; checkpointed, so resume continues

    @property
    def metric(self) -> str:
        return self.kind.metric_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, TaskBatch):
            return batch.to(device, self.dtype)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def backward_full_precision(self, loss: torch.Tensor) -> None:
        """``manual_backward`` (loss scaling, DDP) with autocast off (``metalab.precision``)."""
        with autocast_off():
            self.manual_backward(loss)

    def training_step(self, batch: TaskBatch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        params = dict(self.model.named_parameters())
        self.algorithm.on_outer_step(self.global_step, int(self.trainer.max_steps))
        losses, metrics = self.algorithm.outer_step(
            params, batch, self.strategy, self.backward_full_precision
        )
        loss = losses.mean()
        if not torch.isfinite(loss):
            raise non_finite_error(self, batch, losses)  # before the step: weights stay finite
        clip = self.cfg.optimizer.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=float(clip))
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.train_batches += 1
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log(f"train/{self.metric}", metrics.mean(), prog_bar=True, batch_size=len(batch))
        for key, value in self.algorithm.step_metrics().items():
            self.log(f"train/{key}", value, batch_size=len(batch))

    def _eval_steps(self) -> int:
        """Inner steps at test time (0 for the metric methods, which have none)."""
        return int(self.algorithm.eval_inner_steps)

    def _curve_steps(self) -> list[int]:
        """The inner steps the test-time curve scores (``eval.curve_points`` of them)."""
        return scored_steps(self._eval_steps(), self.cfg.eval.get("curve_points"))

    def _evaluate(self, batch: TaskBatch, score_at: list[int]) -> dict[str, torch.Tensor]:
        """Per-task query loss and metric after the inner steps in ``score_at``, shape
        [tasks, len(score_at)]."""
        params = {k: p.detach() for k, p in self.model.named_parameters()}
        evaluate = functools.partial(self.algorithm.evaluate, score_at=score_at)
        if self.algorithm.parallel_eval:  # test tasks side by side on a CPU's cores
            evaluate = Replicable(
                evaluate,
                lambda: functools.partial(self.algorithm.for_worker().evaluate, score_at=score_at),
            )
        with torch.enable_grad():
            return self.strategy.map(evaluate, params, batch)

    def _eval_tasks(self, split: str) -> int:
        """How many fixed tasks the split has over all ranks (the data module knows)."""
        episodes = getattr(self.trainer.datamodule, f"{split}_episodes", None)
        if episodes is None:  # loaders given directly: one process, nothing to gather
            return sum(len(r["metric"]) for r in self._eval_values)
        return len(episodes)

    def _gathered(self, total: int) -> dict[str, torch.Tensor]:
        """This epoch's per-task evaluation rows from every rank, each task once, in order."""
        rows = self._eval_values
        self._eval_values = []
        return {key: gather_tasks(torch.cat([r[key] for r in rows]), total) for key in rows[0]}

    def on_validation_epoch_start(self) -> None:
        self._eval_values = []

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        out = self._evaluate(batch, [self._eval_steps()])  # validation needs the last step only
        self._eval_values.append({"loss": out["loss"][:, -1], "metric": out["metric"][:, -1]})

    def on_validation_epoch_end(self) -> None:
        values = self._gathered(self._eval_tasks("val"))
        # Already the mean over all ranks' tasks: the same number on every rank, no sync.
        self.log("val/loss", values["loss"].mean())
        self.log(f"val/{self.metric}", values["metric"].mean(), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._eval_values = []

    def test_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._eval_values.append({"metric": self._evaluate(batch, self._curve_steps())["metric"]})

    def on_test_epoch_end(self) -> None:
        values = self._gathered(self._eval_tasks("test"))["metric"]
        steps = self._curve_steps()
        per_step = [mean_and_ci95(values[:, i]) for i in range(values.shape[1])]
        mean, ci = per_step[-1]
        self.log(f"test/{self.metric}", mean)
        self.log(f"test/{self.metric}_ci95", ci)
        for step, (m, _) in zip(steps, per_step, strict=True):
            self.log(f"test/{self.metric}_step{step}", m)
        self.test_summary = {
            "metric": self.metric,
            "mean": mean,
            "ci95": ci,
            "tasks": int(values.shape[0]),
            "per_step": [
                {"step": s, "mean": m, "ci95": c} for s, (m, c) in zip(steps, per_step, strict=True)
            ],
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What a resumed run needs beyond Lightning's own state (step, optimiser, scheduler):
        where the episode stream stands, the RNG states, and auto's choice of strategy, so
        that it continues exactly as an uninterrupted run would."""
        checkpoint["metalab"] = {
            "train_batches": self.train_batches,
            "rng": rng_states(),
            "strategy": self.strategy.state_dict(),
            "algorithm": algorithm_state(self.algorithm),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("metalab")
        if state is None:  # a checkpoint from before metalab recorded its state
            self.train_batches = int(checkpoint.get("global_step", 0))
            return
        self.train_batches = int(state["train_batches"])
        restore_rng_states(state["rng"])
        self.strategy.load_state_dict(state["strategy"])
        load_algorithm_state(self.algorithm, state)

    def configure_optimizers(self):
        opt_cfg = self.cfg.optimizer
        if not opt_cfg.lr > 0:
            raise MetalabError(f"optimizer.lr={opt_cfg.lr}: the outer learning rate must be > 0.")
        # self.parameters(): the model's and what the algorithm meta-learns (Meta-SGD, MAML++).
        name = opt_cfg.get("name", "adam")
        if name not in OUTER_OPTIMIZERS:
            raise MetalabError(
                f"optimizer.name={name!r} is not known: choose {' or '.join(OUTER_OPTIMIZERS)}."
            )
        if self.algorithm.writes_step and (
            name != "sgd"
            or float(opt_cfg.lr) != 1.0
            or opt_cfg.scheduler not in (None, "none")
            or opt_cfg.grad_clip
        ):
            raise MetalabError(
                f"algorithm={self.cfg.algorithm.name} applies its own update (TRPO): set "
                "optimizer.name=sgd optimizer.lr=1 optimizer.scheduler=none "
                "optimizer.grad_clip=null (its experiment presets do)."
            )
        optimizer = OUTER_OPTIMIZERS[name](self.parameters(), lr=float(opt_cfg.lr))
        if opt_cfg.scheduler in (None, "none"):
            return optimizer
        total = max(1, int(self.trainer.max_steps))
        if opt_cfg.scheduler == "cosine":
            factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
        elif opt_cfg.scheduler == "linear":
            factor = lambda step: max(0.0, 1 - step / total)  # noqa: E731
        elif opt_cfg.scheduler == "step":
            every, gamma = opt_cfg.get("step_size"), float(opt_cfg.get("gamma", 0.5))
            if not isinstance(every, int) or every < 1:
                raise MetalabError(
                    f"optimizer.step_size={every!r}: optimizer.scheduler=step multiplies the "
                    "outer lr by optimizer.gamma every step_size outer steps; set it to an "
                    "integer >= 1 (ProtoNets: 2000)."
                )
            factor = lambda step: gamma ** (step // every)  # noqa: E731
        else:
            raise MetalabError(
                f"optimizer.scheduler={opt_cfg.scheduler!r} is not known: choose none, cosine, "
                "linear or step."
            )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
