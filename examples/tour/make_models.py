"""Train the tour's two fraud models with scikit-learn and write them next to this file.

    python examples/tour/make_models.py [--out DIR]

``model-1.4.0.joblib`` is a logistic regression (fast); ``model-1.5.0.joblib`` is a random
forest of 200 trees that mostly agrees with it but answers some 50 times slower: the
release the tour's rollout gate should catch. Both take three numbers per request, like ``contract.json`` says, and
answer a label (``fraud`` or ``legit``) with its probabilities. Seeded: every run writes
the same models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression


def transactions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` made-up transactions (amount, hour, distance) and whether each was fraud."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=(1.0, 2.0, 4.0), scale=(1.0, 1.5, 2.0), size=(n, 3))
    score = 1.2 * x[:, 0] - 0.4 * x[:, 1] + 0.3 * x[:, 2] + rng.normal(scale=0.5, size=n)
    return x, np.where(score > 2.5, "fraud", "legit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    x, y = transactions(4000, seed=14)
    good = LogisticRegression(max_iter=500).fit(x, y)
    # 1.5.0: 200 trees, one after another for every request: the same answers, slowly.
    slow = RandomForestClassifier(
        n_estimators=200, max_depth=10, min_samples_leaf=4, random_state=15, n_jobs=1
    ).fit(x, y)
    for version, model in (("1.4.0", good), ("1.5.0", slow)):
        path = out / f"model-{version}.joblib"
        joblib.dump(model, path)
        print(f"wrote {path} ({type(model).__name__}, {path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
