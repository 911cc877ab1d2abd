"""Per-sample random streams: the same seed gives the same draws for a sample whatever the batch around it."""

from __future__ import annotations

import hashlib

import torch


def _seed_for(*parts) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SampleRng:
    """One ``torch.Generator`` per sample, keyed by (run seed, stream name, sample id)."""

    def __init__(self, seed: int, stream: str, ids, device: torch.device | str = "cpu"):
        self.seed, self.stream = seed, stream
        self.ids = [int(i) for i in ids]
        self.device = torch.device(device)
        self._gens: dict[int, torch.Generator] = {}

    def _gen(self, row: int) -> torch.Generator:
        g = self._gens.get(row)
        if g is None:
            g = torch.Generator().manual_seed(_seed_for(self.seed, self.stream, self.ids[row]))
            self._gens[row] = g
        return g

    def subset(self, rows) -> SampleRng:
        """A view on some rows that shares their generators (so their streams continue, not restart)."""
        rows = [int(r) for r in rows]
        sub = SampleRng(self.seed, self.stream, [self.ids[r] for r in rows], self.device)
        sub._gens = {k: self._gen(r) for k, r in enumerate(rows)}
        return sub

    def _draw(self, rows, shape, fn) -> torch.Tensor:
        rows = range(len(self.ids)) if rows is None else [int(r) for r in rows]
        out = torch.stack([fn(tuple(shape), self._gen(r)) for r in rows]) if rows else torch.empty((0, *shape))
        return out.to(self.device)

    def normal(self, shape, rows=None) -> torch.Tensor:
        return self._draw(rows, shape, lambda s, g: torch.randn(s, generator=g))

    def uniform(self, shape, rows=None) -> torch.Tensor:
        return self._draw(rows, shape, lambda s, g: torch.rand(s, generator=g))

    def rademacher(self, shape, rows=None) -> torch.Tensor:
        return self._draw(rows, shape, lambda s, g: torch.randint(0, 2, s, generator=g).float() * 2 - 1)

    def integers(self, high: int, rows=None) -> torch.Tensor:
        return self._draw(rows, (), lambda s, g: torch.randint(0, high, s, generator=g))
