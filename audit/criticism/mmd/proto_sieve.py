"""The vectorised prototype sieve: Sieve-Streaming on ``F = J_b + 1``, all thresholds at once.

:func:`audit.criticism.mmd.sieve.sieve_prototypes` builds the kernel means and runs it.
"""

from __future__ import annotations

import math

import numpy as np

from audit.criticism.mmd.candidates import Fetch, RowPool, ThresholdGrid
from audit.criticism.mmd.objective import rbf


class ProtoSieve:
    """Sieve-Streaming on ``F = J_b + 1`` with every live threshold handled at once.

    The live sets are the rows of arrays in the order of the :class:`ThresholdGrid`: size, sum
    of ``mu``, sum of the kernel within the set (diagonal included) and members as slots of a
    :class:`RowPool`. The arithmetic per set is the same, in the same order, as the
    one-set-at-a-time formulation.

    Args:
        mu: Kernel means ``(n,)`` (exact or sampled).
        m: Maximum set size.
        gamma: RBF parameter.
        eps: Grid ratio.
        fetch: Rows by index, in float64 with squared norms.
        raw: The input rows, for the float32 screen (None: screen in float64 through ``fetch``).
    """

    def __init__(
        self,
        mu: np.ndarray,
        m: int,
        gamma: float,
        eps: float,
        fetch: Fetch,
        raw: np.ndarray | None = None,
    ) -> None:
        self.mu, self.m, self.gamma, self.fetch = mu, m, gamma, fetch
        self.raw = raw
        self.grid = ThresholdGrid(m, eps)
        self.size = np.zeros(0, dtype=np.int64)
        self.sum_mu = np.zeros(0)
        self.sum_k = np.zeros(0)
        self.members = np.zeros((0, m), dtype=np.int64)
        self.slots = np.zeros((0, m), dtype=np.int64)  # -1: empty (the trailing 0 of a row)
        self.pool = RowPool(fetch)

    # -- state -----------------------------------------------------------------------------

    def _regrid(self, best_single: float) -> None:
        """Keep the sets whose exponent stays on the new grid, add empty ones for the rest."""
        keep = self.grid.raise_to(best_single)
        old = keep >= 0
        count = len(keep)

        def take(arr: np.ndarray, fill: float | int) -> np.ndarray:
            out = np.full((count, *arr.shape[1:]), fill, dtype=arr.dtype)
            out[old] = arr[keep[old]]
            return out

        self.size = take(self.size, 0)
        self.sum_mu = take(self.sum_mu, 0.0)
        self.sum_k = take(self.sum_k, 0.0)
        self.members = take(self.members, -1)
        self.slots = take(self.slots, -1)
        live_members = int(self.size.sum())
        if len(self.pool) > 2 * live_members + 16:
            self._rebuild_pool()

    def _rebuild_pool(self) -> None:
        rows = list(dict.fromkeys(int(r) for r in self.members[self.members >= 0].tolist()))
        self.pool.rebuild(rows)
        mapped = np.full(self.slots.shape, -1, dtype=np.int64)
        filled = self.members >= 0
        mapped[filled] = [self.pool.slot[int(r)] for r in self.members[filled].tolist()]
        self.slots = mapped

    def _f_old(self) -> np.ndarray:
        size = self.size.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = 2.0 * self.sum_mu / size - self.sum_k / size**2 + 1.0
        return np.where(self.size == 0, 0.0, f)

    # -- one item ----------------------------------------------------------------------------

    def _offer(self, e: int) -> bool:
        """Offer item ``e`` to every live set; True when some set took it."""
        count = len(self.grid)
        xe, sqe = self.fetch(np.array([e], dtype=np.int64))
        if (self.size > 0).any():
            krow = self.pool.kernel(xe, sqe, self.gamma)
        else:
            krow = np.zeros(len(self.pool) + 1)
        ke = krow[self.slots].sum(axis=1) if count else np.zeros(0)
        size = self.size.astype(np.float64)
        f_old = self._f_old()
        new_k = self.sum_k + 2.0 * ke + 1.0
        mu_e = self.mu[e]
        f_new = 2.0 * (self.sum_mu + mu_e) / (size + 1) - new_k / (size + 1) ** 2 + 1.0
        gain = f_new - f_old
        with np.errstate(divide="ignore", invalid="ignore"):
            bar = (self.grid.values / 2.0 - f_old) / (self.m - size)
        take = (self.size < self.m) & (gain > 0) & (gain >= bar)
        if not take.any():
            return False
        slot = self.pool.add(e, xe, sqe)
        idx = np.flatnonzero(take)
        pos = self.size[idx]
        self.members[idx, pos] = e
        self.slots[idx, pos] = slot
        self.size[idx] += 1
        self.sum_mu[idx] = self.sum_mu[idx] + mu_e
        self.sum_k[idx] = new_k[idx]
        return True

    # -- the pass ------------------------------------------------------------------------------

    def _kernel_low(self, items: np.ndarray, used: np.ndarray) -> np.ndarray:
        """Lower bounds on ``k(x_i, x_p)`` for ``items`` and pool slots ``used``.

        Exact float64 (up to rounding) when the data were already converted; otherwise float32
        BLAS on the raw rows, with the squared distance raised by the worst-case float32 error
        bound ``(gamma_d + 4u)(||a|| + ||b||)^2`` (``u = 2^-24``, ``gamma_d = d u / (1 - d u)``,
        inputs rounded to float32 included), so no value exceeds the true kernel.
        """
        if self.raw is None:
            xi, sqi = self.fetch(items)
            return rbf(xi, sqi, self.pool.x[used], self.pool.sq[used], self.gamma)
        a = np.asarray(self.raw[items], dtype=np.float32)
        b = self.pool.x[used].astype(np.float32)
        sq_a = np.einsum("ij,ij->i", a, a).astype(np.float64)
        sq_b = np.einsum("ij,ij->i", b, b).astype(np.float64)
        dots = (a @ b.T).astype(np.float64)
        unit = 2.0**-24
        d = a.shape[1] + 1
        slack = (d * unit / (1.0 - d * unit) + 4.0 * unit) * 1.01
        norm_a, norm_b = np.sqrt(sq_a * (1 + slack)), np.sqrt(sq_b * (1 + slack))
        err = slack * (norm_a[:, None] + norm_b[None, :]) ** 2
        d2 = sq_a[:, None] + sq_b[None, :] - 2.0 * dots + err
        np.maximum(d2, 0.0, out=d2)
        return np.exp(-self.gamma * d2)

    def _screen(self, items: np.ndarray) -> np.ndarray:
        """Which of ``items`` some live set could take, given the current state: ``(len,)``.

        Evaluates every (item, set) gain at once from one kernel product of the items against
        the members of the sets that are not full, with a rounding margin, so it only filters:
        every item the exact one-item step (:meth:`_offer`) would accept is flagged.
        """
        live = self.size < self.m
        if not live.any():
            return np.zeros(items.size, dtype=bool)
        slots = self.slots[live]
        used = np.unique(slots[slots >= 0])
        ke = np.zeros((items.size, slots.shape[0]))
        if used.size:
            kern = np.zeros((items.size, self.pool.capacity + 1))
            kern[:, used] = self._kernel_low(items, used)
            ke = kern[:, slots].sum(axis=2)  # padding slots -1 read the zero last column
        size = self.size[live].astype(np.float64)
        f_old = self._f_old()[live]
        new_k = self.sum_k[live] + 2.0 * ke + 1.0
        mu_i = self.mu[items][:, None]
        f_new = 2.0 * (self.sum_mu[live] + mu_i) / (size + 1) - new_k / (size + 1) ** 2 + 1.0
        gain = f_new - f_old
        bar = np.maximum((self.grid.values[live] / 2.0 - f_old) / (self.m - size), 0.0)
        margin = 1e-9 * (1.0 + np.abs(bar) + np.abs(f_new) + np.abs(f_old))
        return np.asarray((gain >= bar - margin).any(axis=1))

    def run(self, stream: np.ndarray) -> list[int]:
        n = stream.size
        single = 2.0 * self.mu[stream]
        previous = np.concatenate([[-math.inf], np.maximum.accumulate(single)[:-1]])
        record = single > previous  # the running maximum M grows here
        pos, chunk = 0, 32
        while pos < n:
            stop = min(pos + chunk, n)
            flag = record[pos:stop].copy()
            if len(self.grid):
                flag |= self._screen(stream[pos:stop])
            hits = np.flatnonzero(flag)
            if hits.size == 0:
                pos, chunk = stop, min(2 * chunk, 4096)
                continue
            p = pos + int(hits[0])
            pos, chunk = p + 1, 32
            if record[p]:
                self._regrid(float(single[p]))
            if len(self.grid):
                self._offer(int(stream[p]))
        return self._best()

    def _best(self) -> list[int]:
        best: list[int] = []
        best_val = -math.inf
        for k in range(len(self.grid)):
            size = int(self.size[k])
            if size:
                val = 2.0 * float(self.sum_mu[k]) / size - float(self.sum_k[k]) / size**2
                if val > best_val:
                    best, best_val = [int(r) for r in self.members[k, :size]], val
        return best


def sampled_means(x: np.ndarray, rows: np.ndarray, gamma: float, block: int = 2048) -> np.ndarray:
    """``1/s sum_{i in rows} k(x_i, x_j)`` for every ``j``: ``(n,)`` float64.

    Float32 BLAS on data centred at the subsample mean (distances are unchanged, and centring
    keeps ``||a||^2 + ||b||^2`` close to ``||a - b||^2`` so float32 loses little); the exponent
    ``2 gamma <a, b> - gamma ||a||^2 - gamma ||b||^2`` comes out of a single product of matrices
    augmented by two columns, and the row sums of the kernel are accumulated in float64.
    """
    n, d = x.shape
    s = rows.size
    centre = np.asarray(x[rows], dtype=np.float64).mean(axis=0).astype(np.float32)
    right = np.empty((s, d + 2), dtype=np.float32)
    np.subtract(x[rows], centre, out=right[:, :d], casting="unsafe")
    r_sq = np.einsum("ij,ij->i", right[:, :d], right[:, :d], dtype=np.float64)
    right[:, :d] *= np.float32(2.0 * gamma)
    right[:, d] = 1.0
    right[:, d + 1] = -gamma * r_sq
    mu = np.empty(n, dtype=np.float64)
    buf = np.empty((min(block, n), d + 2), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        left = buf[: stop - start]
        np.subtract(x[start:stop], centre, out=left[:, :d], casting="unsafe")
        l_sq = np.einsum("ij,ij->i", left[:, :d], left[:, :d], dtype=np.float64)
        left[:, d] = -gamma * l_sq
        left[:, d + 1] = 1.0
        expo = left @ right.T  # -gamma ||x_j - x_i||^2, (block, s)
        np.minimum(expo, 0.0, out=expo)
        np.exp(expo, out=expo)
        mu[start:stop] = expo.sum(axis=1, dtype=np.float64)
    return mu / s
