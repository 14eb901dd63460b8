"""A small neural network (MLP) trained online by backpropagation with PyTorch (CPU or GPU).

:class:`MLP` is built on the first batch it learns (its input width is the batch's): dense
layers of ``hidden`` units with ReLU, then a softmax over ``n_classes`` (classification) or
one output (regression). Each ``learn`` call takes one Adam step per ``batch_size`` rows, in
row order, ``epochs`` times over the batch. Weights and the optimizer's moments go into the
snapshot as numpy arrays (no pickle), so an MLP checkpoints like every other learner.
Seeded: the same seed and the same batches give the same weights.

PyTorch is imported when the first MLP is built; without it the error says
``pip install 'tidal-stream[torch]'``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(4_000, 2)); y = ((X[:, 0] * X[:, 1]) > 0).astype(float)  # XOR
    >>> net = MLP(hidden=(16,), lr=0.01, epochs=3, seed=1)
    >>> net.learn(X, y)
    >>> bool((net.predict(X) == y).mean() > 0.9)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.learn.base import Task, check_state, check_xy, json_state

__all__ = ["MLP"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        msg = "the MLP learner needs PyTorch: pip install 'tidal-stream[torch]'"
        raise ImportError(msg) from exc
    return torch


class MLP:
    """A multi-layer perceptron learned in mini-batches (see the module doc).

    Args:
        hidden: units of each hidden layer.
        task: ``"classification"`` or ``"regression"``.
        n_classes: classes (class ids ``0..n_classes-1``).
        lr: Adam's learning rate.
        batch_size: rows per step.
        epochs: passes over each learned batch.
        seed: seeds the initial weights.
        device: ``"cpu"`` (float64), ``"cuda"`` (float32 weights, bfloat16 autocast: mixed
            precision) or ``"auto"`` (cuda where PyTorch sees a GPU). Not part of the
            snapshot's settings: a snapshot taken on one device restores on the other.

    Raises:
        ConfigError: for an unknown task or non-positive sizes.
    """

    kind: ClassVar[str] = "mlp"
    checkpointable: ClassVar[bool] = True

    def __init__(  # noqa: PLR0913 - keyword settings
        self,
        *,
        hidden: Sequence[int] = (32,),
        task: Literal["classification", "regression"] = "classification",
        n_classes: int = 2,
        lr: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 1,
        seed: int = 0,
        device: Literal["cpu", "cuda", "auto"] = "cpu",
    ) -> None:
        if task not in ("classification", "regression"):
            msg = f"mlp: task must be 'classification' or 'regression', got {task!r}"
            raise ConfigError(msg)
        if min([*hidden, n_classes - 1, batch_size, epochs]) < 1 or lr <= 0:
            msg = "mlp: hidden units, batch_size, epochs >= 1, n_classes >= 2, lr > 0"
            raise ConfigError(msg)
        self.task: Task = task
        self.n_classes = n_classes
        self.params: dict[str, Any] = {
            "hidden": list(hidden),
            "task": task,
            "n_classes": n_classes,
            "lr": lr,
            "batch_size": batch_size,
            "epochs": epochs,
            "seed": seed,
        }
        self.torch = _torch()
        if device == "auto":
            device = "cuda" if self.torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            msg = f"mlp: device must be 'cpu', 'cuda' or 'auto', got {device!r}"
            raise ConfigError(msg)
        self.device = device
        self.dtype = self.torch.float64 if device == "cpu" else self.torch.float32
        self.net: Any = None
        self.opt: Any = None
        self.dim: int | None = None
        self.grad_hook: Any = None
        """Called with the network after each backward pass, before the optimizer step (a
        data-parallel retrain averages the gradients across processes here); not state."""

    def _build(self, d: int) -> None:
        torch = self.torch
        sizes = [d, *self.params["hidden"]]
        layers: list[Any] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params["seed"])
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                layers += [torch.nn.Linear(a, b, dtype=self.dtype), torch.nn.ReLU()]
            out = self.n_classes if self.task == "classification" else 1
            layers.append(torch.nn.Linear(sizes[-1], out, dtype=self.dtype))
        self.net = torch.nn.Sequential(*layers).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.params["lr"])
        self.dim = d

    def _forward(self, x: Array) -> Array:
        torch = self.torch
        if self.net is None:
            k = self.n_classes if self.task == "classification" else 1
            z = np.zeros((len(x), k))
        else:
            with torch.no_grad():
                with self._autocast():
                    zt = self.net(self._tensor(x))
                z = zt.double().cpu().numpy()
        if self.task == "classification":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            out: Array = e / e.sum(axis=1, keepdims=True)
            return out
        return z[:, 0]

    def learn(self, X: Array, y: Array, weight: Array | None = None) -> None:
        """Adam steps over ``X`` in order, ``batch_size`` rows each, ``epochs`` times."""
        x, yy, ww = check_xy(self.kind, X, y, weight, dim=self.dim)
        assert yy is not None
        if self.net is None:
            self._build(x.shape[1])
        torch = self.torch
        xt, yt = self._tensor(x), self._tensor(yy)
        wt = self._tensor(ww if ww is not None else np.ones(len(x)))
        if (
            self.task == "classification"
            and len(yy)
            and (yy.max() >= self.n_classes or yy.min() < 0)
        ):
            msg = f"mlp: class ids must be 0..{self.n_classes - 1}, got {int(yy.max())}"
            raise ConfigError(msg)
        bs = self.params["batch_size"]
        for _ in range(self.params["epochs"]):
            for start in range(0, len(x), bs):
                xb, yb, wb = xt[start : start + bs], yt[start : start + bs], wt[start : start + bs]
                with self._autocast():
                    z = self.net(xb).to(self.dtype)
                if self.task == "classification":
                    per_row = torch.nn.functional.cross_entropy(z, yb.long(), reduction="none")
                else:
                    per_row = (z[:, 0] - yb) ** 2
                loss = (per_row * wb).mean()
                self.opt.zero_grad()
                loss.backward()
                if self.grad_hook is not None:
                    self.grad_hook(self.net)
                self.opt.step()

    def _tensor(self, a: Array) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype)

    def _autocast(self) -> Any:
        import contextlib

        if self.device == "cuda":
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def predict_learn(self, X: Array, y: Array, weight: Array | None = None) -> Array:
        """The batch's predictions (probabilities or values) before learning it; then learn."""
        out = self._forward(check_xy(self.kind, X, dim=self.dim)[0])
        self.learn(X, y, weight)
        return out

    def predict_proba(self, X: Array) -> Array:
        """``(n, n_classes)`` class probabilities."""
        return self._forward(check_xy(self.kind, X, dim=self.dim)[0])

    def predict(self, X: Array) -> Array:
        """Class ids, or values for regression."""
        out = self._forward(check_xy(self.kind, X, dim=self.dim)[0])
        if self.task == "classification":
            ids: Array = out.argmax(axis=1).astype(np.int64)
            return ids
        return out

    def snapshot(self) -> dict[str, Any]:
        """Weights and Adam's moments as numpy arrays."""
        state: dict[str, Any] = {
            "kind": self.kind,
            "params": json_state(self.params),
            "dim": self.dim,
        }
        if self.net is None:
            return state
        for name, t in self.net.state_dict().items():
            state[f"net.{name}"] = t.detach().cpu().numpy().copy()
        for i, s in self.opt.state_dict()["state"].items():
            state[f"opt.{i}.step"] = np.array([float(s["step"])])
            state[f"opt.{i}.exp_avg"] = s["exp_avg"].cpu().numpy().copy()
            state[f"opt.{i}.exp_avg_sq"] = s["exp_avg_sq"].cpu().numpy().copy()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote.

        Raises:
            StateError: if the snapshot is of another learner or other settings.
        """
        check_state(self.kind, state, self.params)
        if state.get("dim") is None:
            self.net = self.opt = self.dim = None
            return
        torch = self.torch
        self._build(int(state["dim"]))
        self.net.load_state_dict(
            {
                name: torch.from_numpy(np.array(state[f"net.{name}"]))
                for name in self.net.state_dict()
            }
        )
        opt_state = self.opt.state_dict()
        for i in opt_state["param_groups"][0]["params"]:
            if f"opt.{i}.step" in state:
                opt_state["state"][i] = {
                    "step": torch.tensor(float(state[f"opt.{i}.step"][0])),
                    "exp_avg": torch.from_numpy(np.array(state[f"opt.{i}.exp_avg"])),
                    "exp_avg_sq": torch.from_numpy(np.array(state[f"opt.{i}.exp_avg_sq"])),
                }
        self.opt.load_state_dict(opt_state)
