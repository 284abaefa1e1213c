"""How far first-order MAML's meta-gradient points from second-order MAML's, by inner step.

First-order MAML (the query gradient at the adapted weights) drops the (I - alpha H) factor
of MAML's meta-gradient; at a large inner step alpha that factor is far from I. This prints,
for a checkpoint's weights (or a fresh model's) and meta-batches of its training tasks, the
cosine between the two meta-gradients and their norm ratio at several inner steps, so a
first-order plateau can be told apart from a defect (the float64 tests check each gradient
on its own; this compares the two directions on real tasks).

    python benchmarks/first_order_direction.py ~/runs/maml_5w1s/checkpoints/best.ckpt \
        --alphas 0.4 1.0 2.0 --batches 4
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from metalab.assembly import build_data, build_module
from metalab.checkpoints import checkpoint_config, load_checkpoint, load_weights
from metalab.execution import LoopStrategy


def meta_gradient(cfg, in_shape, out_features, state, batch, first_order: bool, alpha: float):
    cfg = OmegaConf.merge(
        cfg,
        {
            "algorithm": {
                "name": "fomaml" if first_order else "maml",
                "first_order": first_order,
                "inner_lr": alpha,
            }
        },
    )
    module = build_module(cfg, in_shape, out_features)
    if state is not None:
        module.load_state_dict(state)
    params = dict(module.model.named_parameters())
    module.algorithm.outer_step(params, batch, LoopStrategy(), lambda loss: loss.backward())
    return torch.cat([p.grad.flatten() for p in params.values()])


def compare_directions(
    cfg, state: dict | None, alphas: list[float], batches: int
) -> list[tuple[float, float, float, float]]:
    """Per inner step alpha: mean and smallest cosine between FOMAML's and MAML's
    meta-gradients over ``batches`` training meta-batches, and the mean norm ratio."""
    data, in_shape, out_features = build_data(cfg)
    if state is None:
        torch.manual_seed(int(cfg.seed))
        state = build_module(cfg, in_shape, out_features).state_dict()
    episodes = iter(data.train_episodes)
    tasks = [next(episodes) for _ in range(batches)]
    rows = []
    for alpha in alphas:
        cosines, ratios = [], []
        for batch in tasks:
            so = meta_gradient(cfg, in_shape, out_features, state, batch, False, alpha)
            fo = meta_gradient(cfg, in_shape, out_features, state, batch, True, alpha)
            cosines.append(float(torch.nn.functional.cosine_similarity(fo, so, dim=0)))
            ratios.append(float(fo.norm() / so.norm()))
        rows.append((alpha, sum(cosines) / len(cosines), min(cosines), sum(ratios) / len(ratios)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a metalab checkpoint (its config and weights)")
    parser.add_argument("--fresh", action="store_true", help="a fresh model instead of its weights")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.4, 1.0, 2.0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--meta-batch", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.ckpt)
    cfg = OmegaConf.create(checkpoint_config(ckpt, args.ckpt))
    if args.meta_batch:
        cfg.algorithm.meta_batch = args.meta_batch
    state = None
    if not args.fresh:
        data, in_shape, out_features = build_data(cfg)
        module = build_module(cfg, in_shape, out_features)
        load_weights(module, ckpt, args.ckpt)
        state = module.state_dict()
    print(
        f"{'alpha':>6} {'cosine(FO, SO)':>16} {'|FO| / |SO|':>12}   ({args.batches} meta-batches"
        f" of {cfg.algorithm.meta_batch} tasks, {'fresh' if args.fresh else 'checkpoint'} weights)"
    )
    for alpha, mean, smallest, ratio in compare_directions(cfg, state, args.alphas, args.batches):
        print(f"{alpha:>6.2f} {mean:>10.3f} (min {smallest:.3f}) {ratio:>8.2f}")


if __name__ == "__main__":
    main()
