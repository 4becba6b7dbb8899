"""Training losses: the paper's cross-entropy plus what unseen-track retrieval needs.

- ``cross_entropy`` (eq. 4): softmax over training classes from the relaxed code.
- ``nt_xent``: contrastive loss over a batch of (query, reference) code pairs, as in neural audio
  fingerprinting (Chang et al. 2021): a query window's positive is its reference window, every
  other code in the batch is a negative, except near-duplicates (windows of the same item less
  than ``min_gap`` hops apart, which share most of their audio); optionally also a queue of
  reference codes from earlier batches (MoCo-style), since a batch holds only a few tracks.
- ``quantisation``: pushes relaxed codes to ±1 so that sign() loses little.
- ``bit_balance``: each bit should be +1 on about half the codes and bits should be uncorrelated,
  so that 64 bits carry close to 64 bits of information.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(query: torch.Tensor, reference: torch.Tensor, item: torch.Tensor, window: torch.Tensor, temperature: float = 0.1, min_gap: int = 3,
            extra_negatives: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric NT-Xent over 2N codes; returns (loss, fraction of queries whose top match is right).

    ``item`` and ``window`` (N,) say which item and which window of it each pair comes from.
    ``extra_negatives`` (M, K), already normalised and detached (e.g. reference codes of earlier
    batches), are negatives for every code: many tracks per step at no extra forward cost.
    """
    n = query.shape[0]
    z = F.normalize(torch.cat([query, reference]), dim=-1)
    sim = z @ z.T / temperature
    item2, window2 = torch.cat([item, item]), torch.cat([window, window])
    same_item = item2[:, None] == item2[None, :]
    near = same_item & ((window2[:, None] - window2[None, :]).abs() < min_gap)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(query.device)
    positive = torch.zeros_like(near)
    positive[torch.arange(2 * n), target] = True
    sim = sim.masked_fill(near & ~positive, float("-inf"))
    if extra_negatives is not None and len(extra_negatives):
        sim = torch.cat([sim, z @ extra_negatives.T / temperature], dim=1)
    loss = F.cross_entropy(sim, target)
    accuracy = (sim[:n].argmax(dim=1) == target[:n]).float().mean()
    return loss, accuracy


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def quantisation(codes: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of relaxed codes from their signs."""
    return (codes - codes.detach().sign()).square().mean()


def bit_balance(codes: torch.Tensor) -> torch.Tensor:
    """Squared per-bit mean plus squared off-diagonal bit correlation."""
    mean = codes.mean(dim=0)
    centred = codes - mean
    cov = centred.T @ centred / max(1, codes.shape[0] - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return mean.square().mean() + off.square().mean()
