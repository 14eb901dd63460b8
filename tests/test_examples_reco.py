"""The recommendation and pricing examples, run small."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shop_recommendations_learns_and_serves() -> None:
    out = _load("shop_recommendations").main(20_000, echo=False)
    assert out["interactions_learned"] == 20_000
    assert len(out["mf"]) >= 10 and len(out["popular"]) >= 10
    late = out["mf"][-5:]
    assert sum(p["purchases"] for p in late) > 100
    assert all(0 <= p["hit_rate@10"] <= 1 and 0 <= p["ndcg@10"] <= p["hit_rate@10"] for p in late)
    # the learned model beats the popularity baseline on the same purchases, same run
    mf, pop = out["mf_late"], out["popular_late"]
    assert mf["purchases"] == pop["purchases"] > 1000
    assert mf["hit_rate@10"] > 1.5 * pop["hit_rate@10"] > 0, (mf, pop)
    assert mf["ndcg@10"] > 1.5 * pop["ndcg@10"] > 0, (mf, pop)
    assert len(out["answers"]) == 5
    assert all(len(items) == 5 for _, items in out["answers"])


def test_dynamic_pricing_learning_curves() -> None:
    out = _load("dynamic_pricing").main(200, echo=False)
    tab = out["curves"]["tabular_q"]
    assert len(tab) == 10 and tab[-1] > tab[0]
    assert out["greedy"]["tabular_q"] > out["random"]
    assert out["greedy"]["linear_q"] > out["random"]
