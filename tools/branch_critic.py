"""Can a Q head rank chunks when it is given counterfactual labels? (issue 18, diagnostic)

The fleet's critic does not rank an `lh` policy's chunks, while an oracle that rolls each
candidate out does (docs/benchmarks.md). Fleet data never tries two chunks from the same
state. This tool gives a critic exactly that data, from simulation, and measures whether it
then ranks:

    collect  episodes of the plain policy (candidate 0 at s = 0, executed at every replan);
             at each replan 4 candidates (candidate 0 + 3 samples at s = 1, as
             `lwd bench ceiling --first-noise-scale 0`) are scored by the oracle
             (`OracleScorer`, lookahead 40), once per --oracle-seeds entry. Saves an .npz.
    fit      fits the Q ensemble of a learner checkpoint (or a fresh one of its config) to the
             oracle scores of a training .npz (MSE per head, or a listwise cross-entropy
             against the oracle's argmax); reports held-out ranking metrics; saves the heads.
    screen   best-of-N with a fitted critic against the plain policy on the same validation
             episodes (`run_best_of_n_episodes`), and the ranking metrics of any critics on a
             held-out .npz.

    python tools/branch_critic.py collect --checkpoint CKPT --split train --seeds 30 --out train.npz
    python tools/branch_critic.py collect --checkpoint CKPT --split validation --seeds 20 \\
        --oracle-seeds 1 2 --out val.npz
    python tools/branch_critic.py fit --checkpoint CKPT --data train.npz --heldout val.npz --out fitted.safetensors
    python tools/branch_critic.py screen --checkpoint CKPT --critic-weights fitted.safetensors --episodes-per-task 20
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lwd.envs import SEEDS
from lwd.evaluation.ceiling import (
    CriticScorer,
    OracleScorer,
    load_critic,
    run_best_of_n_episodes,
    sample_candidates,
)
from lwd.evaluation.evaluate import LockstepEpisodes, episode_generators
from lwd.policy.checkpoint import load_checkpoint
from lwd.policy.critic import ChunkCritic
from lwd.workers import WorkerPool

LH_CHAINS = ("lh-stock-drawer", "lh-clear-bench", "lh-inspect", "lh-line-up")
CANDIDATES = 4
LOOKAHEAD = 40


def seed_of(split: str, k: int) -> int:
    return SEEDS.train(k) if split == "train" else SEEDS.held_out(split, k)


def collect_chain(args: tuple) -> dict:
    """One chain's episodes, `group` at a time in lockstep: every live episode keeps N scratch
    robots per oracle (a Meta-World robot holds ~80 MB), so the group bounds memory."""
    checkpoint, task, split, count, noise_seed, oracle_seeds, group = args
    torch.set_num_threads(1)
    policy, encoder, _ = load_checkpoint(checkpoint)
    oracles = [OracleScorer(policy, encoder, LOOKAHEAD, noise_seed=s) for s in oracle_seeds]
    states, instructions, chunks, scores, episode_ids, success = [], [], [], [], [], []
    horizon = policy.chunk_len
    for first in range(0, count, group):
        jobs = [(task, seed_of(split, k)) for k in range(first, min(first + group, count))]
        generators = episode_generators(noise_seed, jobs)
        episodes = LockstepEpisodes(jobs, "canonical")
        while episodes.live.any():
            idx = np.flatnonzero(episodes.live)
            candidates = sample_candidates(policy, encoder, episodes, generators, idx, CANDIDATES, 0.0)
            robots = [episodes.robots[i] for i in idx]
            replan_states = episodes.states[idx].copy()
            texts = [episodes.instructions[i] for i in idx]
            per_oracle = [o.score(robots, replan_states, texts, candidates, horizon) for o in oracles]
            states.append(replan_states)
            instructions.extend(texts)
            chunks.append(candidates.astype(np.float32))
            scores.append(np.stack(per_oracle, axis=1))  # (B, oracles, N)
            episode_ids.append(idx + first)
            for row, i in enumerate(idx):
                episodes.execute(i, candidates[row, 0])
        success.extend(o.success for o in episodes.close())
    for oracle in oracles:
        oracle.close()
    return {
        "task": task,
        "states": np.concatenate(states).astype(np.float32),
        "instructions": instructions,
        "chunks": np.concatenate(chunks),
        "scores": np.concatenate(scores).astype(np.float32),
        "episode": np.concatenate(episode_ids),
        "success": np.array(success),
    }


def collect(a: argparse.Namespace) -> None:
    start = time.time()
    jobs = [(a.checkpoint, task, a.split, a.seeds, a.noise_seed, tuple(a.oracle_seeds), a.group) for task in a.tasks]
    with WorkerPool(a.workers) as pool:
        parts = pool.map(collect_chain, jobs)
    out = {
        "states": np.concatenate([p["states"] for p in parts]),
        "instructions": np.array([t for p in parts for t in p["instructions"]]),
        "chunks": np.concatenate([p["chunks"] for p in parts]),
        "scores": np.concatenate([p["scores"] for p in parts]),
        "task": np.array([p["task"] for p in parts for _ in range(len(p["states"]))]),
        "episode": np.concatenate([p["episode"] for p in parts]),
    }
    np.savez_compressed(a.out, **out)
    for p in parts:
        print(f"{p['task']}: {len(p['states'])} replans, plain success {p['success'].mean():.3f}")
    print(f"{len(out['states'])} replans in {time.time() - start:.0f} s -> {a.out}")


def load_tuples(path: str, encoder, episodes: int = 0) -> dict:
    """The replans of an .npz; with `episodes` > 0 only those of each chain's first `episodes` episodes."""
    data = np.load(path, allow_pickle=False)
    keep = data["episode"] < episodes if episodes > 0 else np.ones(len(data["states"]), dtype=bool)
    return {
        "obs": torch.from_numpy(data["states"][keep]),
        "text": torch.from_numpy(encoder.embed(list(data["instructions"][keep]))),
        "chunks": torch.from_numpy(data["chunks"][keep]),
        "scores": torch.from_numpy(data["scores"][keep]),  # (R, oracles, N)
        "task": data["task"][keep],
    }


@torch.inference_mode()
def critic_scores(critic, tuples: dict) -> torch.Tensor:
    """(R, N) mean-over-heads Q of every candidate."""
    r, n = tuples["chunks"].shape[:2]
    out = []
    for lo in range(0, r, 512):
        hi = min(lo + 512, r)
        obs = tuples["obs"][lo:hi].repeat_interleave(n, 0)
        text = tuples["text"][lo:hi].repeat_interleave(n, 0)
        acts = tuples["chunks"][lo:hi].flatten(0, 1)
        out.append(critic(obs, text, acts).mean(0).reshape(hi - lo, n))
    return torch.cat(out)


def ranking_metrics(predicted: torch.Tensor, oracle: torch.Tensor, margin: float = 0.05) -> dict:
    """On replans whose oracle scores are not all equal: how often `predicted`'s argmax is an
    oracle-best candidate, and pairwise order accuracy on pairs differing by > margin."""
    informative = (oracle.max(1).values - oracle.min(1).values) > 1e-6
    p, o = predicted[informative], oracle[informative]
    best = o.max(1, keepdim=True).values
    top1 = (o.gather(1, p.argmax(1, keepdim=True)) >= best - 1e-6).float().mean().item()
    # Chance of top-1: the share of oracle-best candidates per replan.
    chance = ((o >= best - 1e-6).float().mean(1)).mean().item()
    do = o.unsqueeze(2) - o.unsqueeze(1)
    dp = p.unsqueeze(2) - p.unsqueeze(1)
    pairs = do > margin
    pairwise = ((dp > 0) & pairs).sum().item() / max(pairs.sum().item(), 1)
    plain_best = (o[:, 0] >= best[:, 0] - 1e-6).float().mean().item()
    # Over all replans: what the pick loses against the oracle's best and against the plain chunk,
    # and how often it is much worse (harm) or much better (help) than the plain chunk.
    picked = oracle.gather(1, predicted.argmax(1, keepdim=True))[:, 0]
    plain = oracle[:, 0]
    return {
        "informative_replans": int(informative.sum()),
        "replans": int(len(oracle)),
        "top1": round(top1, 3),
        "top1_chance": round(chance, 3),
        "plain_is_best": round(plain_best, 3),
        "pairwise": round(pairwise, 3),
        "pairs": int(pairs.sum()),
        "regret": round((oracle.max(1).values - picked).mean().item(), 4),
        "minus_plain": round((picked - plain).mean().item(), 4),
        "harm": round((picked < plain - margin).float().mean().item(), 4),
        "help": round((picked > plain + margin).float().mean().item(), 4),
        "room": round((oracle.max(1).values > plain + margin).float().mean().item(), 4),
    }


def fit(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    _, encoder, _ = load_checkpoint(a.checkpoint)
    base = load_critic(a.critic or a.checkpoint)
    critic = copy.deepcopy(base) if not a.fresh else ChunkCritic(base.config)
    if a.fresh:
        head = base.heads[0].encoder
        critic.set_normalization(head.obs_mean, head.obs_std)
    train = load_tuples(a.data, encoder, a.episodes)
    print(f"fitting on {len(train['obs'])} replans")
    heldout = load_tuples(a.heldout, encoder)
    target = train["scores"].mean(1)  # (R, N): mean over oracle seeds
    r, n = target.shape
    optimizer = torch.optim.Adam(critic.parameters(), lr=a.lr)
    print("before:", json.dumps(ranking_metrics(critic_scores(critic, heldout), heldout["scores"][:, 0])))
    critic.train()
    generator = torch.Generator().manual_seed(a.seed)
    rows = max(1, a.batch // n)
    for step in range(1, a.steps + 1):
        pick = torch.randint(r, (rows,), generator=generator)
        obs = train["obs"][pick].repeat_interleave(n, 0)
        text = train["text"][pick].repeat_interleave(n, 0)
        q = critic(obs, text, train["chunks"][pick].flatten(0, 1)).reshape(-1, rows, n)  # (heads, rows, N)
        if a.loss == "mse":
            loss = ((q - target[pick]) ** 2).mean()
        elif a.loss == "advantage":  # only the differences between candidates of one state
            centred = target[pick] - target[pick].mean(1, keepdim=True)
            loss = ((q - q.mean(2, keepdim=True) - centred) ** 2).mean()
        else:
            logits = q / a.temperature
            best = target[pick].argmax(1)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), best.repeat(q.shape[0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % a.log_every == 0 or step == a.steps:
            critic.eval()
            m_train = ranking_metrics(critic_scores(critic, train), train["scores"][:, 0])
            m_val = ranking_metrics(critic_scores(critic, heldout), heldout["scores"][:, 0])
            critic.train()
            line = f"step {step} loss {loss.item():.4f} train {json.dumps(m_train)} heldout {json.dumps(m_val)}"
            print(line, flush=True)
    critic.eval()
    save_file({k: v.contiguous() for k, v in critic.state_dict().items()}, a.out)
    print("saved", a.out)


def critic_from(a: argparse.Namespace, weights: str | None):
    critic = load_critic(a.critic or a.checkpoint)
    if weights:
        critic.load_state_dict(load_file(weights))
    return critic.eval()


class PlainBonusScorer:
    """A scorer whose pick leaves the plain chunk (candidate 0) only when another candidate
    beats it by more than `bonus`."""

    def __init__(self, inner, bonus: float):
        self.inner, self.bonus = inner, bonus

    def score(self, *args) -> np.ndarray:
        scores = self.inner.score(*args).copy()
        scores[:, 0] += self.bonus
        return scores


def screen(a: argparse.Namespace) -> None:
    """Held-out ranking metrics per critic (and per switch share: the pick leaves the plain chunk
    only where the critic's margin over it is in the top share of held-out replans), then
    best-of-N episodes with each (critic, share) paired with the plain policy."""
    torch.set_num_threads(a.threads)
    policy, encoder, _ = load_checkpoint(a.checkpoint)
    result: dict = {}
    critics = {
        ("base" if w == "base" else Path(w).stem): critic_from(a, None if w == "base" else w) for w in a.critic_weights
    }
    bonuses = {(name, share): 0.0 for name in critics for share in a.switch_shares}
    if a.heldout:
        heldout = load_tuples(a.heldout, encoder)
        oracle = heldout["scores"]
        if oracle.shape[1] > 1:
            result["oracle_vs_oracle"] = ranking_metrics(oracle[:, 1], oracle[:, 0])
        for name, critic in critics.items():
            q = critic_scores(critic, heldout)
            margin = (q.max(1).values - q[:, 0]).numpy()
            for share in a.switch_shares:
                bonus = float(np.quantile(margin, 1.0 - share)) if share < 1.0 else 0.0
                bonuses[(name, share)] = bonus
                gated = q.clone()
                gated[:, 0] += bonus
                metrics = ranking_metrics(gated, oracle[:, 0])
                result[f"metrics_{name}_share{share}"] = {"bonus": round(bonus, 5), **metrics}
    elif any(share < 1.0 for share in a.switch_shares):
        raise SystemExit("--switch-shares below 1 need --heldout (the margins come from its replans)")
    if a.episodes_per_task:
        jobs = [(task, SEEDS.validation(k)) for task in a.tasks for k in range(a.episodes_per_task)]
        plain = run_best_of_n_episodes(policy, encoder, jobs, 1, None, a.noise_seed, first_noise_scale=0.0)
        s_plain = np.array([o.outcome.success for o in plain], float)
        result["plain"] = float(s_plain.mean())
        for (name, share), bonus in bonuses.items():
            scorer = PlainBonusScorer(CriticScorer(critics[name], encoder), bonus)
            picked = run_best_of_n_episodes(policy, encoder, jobs, a.n, scorer, a.noise_seed, first_noise_scale=0.0)
            s_pick = np.array([o.outcome.success for o in picked], float)
            changed = sum(o.changed for o in picked) / max(sum(o.replans for o in picked), 1)
            result[f"{name}_share{share}"] = {
                "success": float(s_pick.mean()),
                "minus_plain": float((s_pick - s_plain).mean()),
                "wins_losses": [int(((s_pick - s_plain) > 0).sum()), int(((s_pick - s_plain) < 0).sum())],
                "changed_fraction": round(changed, 3),
            }
            print(name, share, json.dumps(result[f"{name}_share{share}"]), flush=True)
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="oracle-scored candidates along plain-policy episodes")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--split", choices=("train", "validation"), default="train")
    c.add_argument("--seeds", type=int, default=30, help="episodes per chain (seed indices 0..K-1 of the split)")
    c.add_argument("--tasks", nargs="+", default=list(LH_CHAINS))
    c.add_argument("--noise-seed", type=int, default=0)
    c.add_argument("--oracle-seeds", type=int, nargs="+", default=[1], help="one oracle scoring per seed")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--group", type=int, default=5, help="episodes run in lockstep (bounds the scratch robots' memory)")
    c.add_argument("--out", required=True)
    f = sub.add_parser("fit", help="fit Q heads to oracle scores")
    f.add_argument("--checkpoint", required=True, help="policy checkpoint (its instruction encoder)")
    f.add_argument("--critic", default="", help="learner checkpoint whose critic is the start (default: --checkpoint)")
    f.add_argument("--fresh", action="store_true", help="start from a fresh critic of the same config")
    f.add_argument("--data", required=True)
    f.add_argument("--heldout", required=True)
    f.add_argument("--episodes", type=int, default=0, help="fit on each chain's first K episodes only (0 = all)")
    f.add_argument("--loss", choices=("mse", "advantage", "listwise"), default="mse")
    f.add_argument("--temperature", type=float, default=0.05, help="listwise: softmax temperature on Q")
    f.add_argument("--steps", type=int, default=3000)
    f.add_argument("--batch", type=int, default=256, help="(state, chunk) pairs per step")
    f.add_argument("--lr", type=float, default=3e-4)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--log-every", type=int, default=500)
    f.add_argument("--out", required=True)
    s = sub.add_parser("screen", help="best-of-N with fitted critics vs the plain policy; held-out ranking metrics")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--critic", default="", help="learner checkpoint with the critic config (default: --checkpoint)")
    s.add_argument("--critic-weights", nargs="+", default=["base"], help="fitted heads (.safetensors) or 'base'")
    s.add_argument(
        "--switch-shares",
        type=float,
        nargs="+",
        default=[1.0],
        help="leave the plain chunk only where the critic's margin is in this top share of held-out replans",
    )
    s.add_argument("--heldout", default="")
    s.add_argument("--tasks", nargs="+", default=list(LH_CHAINS))
    s.add_argument("--episodes-per-task", type=int, default=20)
    s.add_argument("--n", type=int, default=CANDIDATES)
    s.add_argument("--noise-seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--out", default="")
    a = parser.parse_args()
    {"collect": collect, "fit": fit, "screen": screen}[a.command](a)


if __name__ == "__main__":
    main()
