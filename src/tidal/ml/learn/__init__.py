"""Online learners: models that learn from the stream, batch-first.

* :mod:`.base`: the :class:`Learner` protocol;
* :mod:`.linear`: linear, logistic and softmax regression (SGD, Adam, FTRL-proximal; L1/L2;
  mini-batch or exact per-sample updates, compiled by :mod:`.kernels`);
* :mod:`.kmeans`: online k-means; :mod:`.mlp`: an MLP by backpropagation (PyTorch);
* :mod:`.river_adapter`: River's models (the slow path);
* :mod:`.keras_adapter`: Keras 3 models (``.keras`` files) trained on PyTorch;
* :mod:`.features`: columns to a feature matrix (standardize, one-hot, hashing);
* :mod:`.metrics`: prequential metrics; :mod:`.step`: the ``learn`` pipeline step;
* :mod:`.loop`: the closed loop (drift -> retrain -> shadow -> promote; settings in
  :mod:`.retrain_policy`), whose retrains run
  in :mod:`.retrain_job` (a child process);
* :mod:`.catalog`: every built-in learner by name.

Example:
    >>> import numpy as np
    >>> model = make("logistic", optimizer="adam", lr=0.1)
    >>> model.learn(np.array([[-1.0], [1.0]] * 100), np.array([0.0, 1.0] * 100))
    >>> model.predict(np.array([[-3.0], [3.0]])).tolist()
    [0, 1]
"""

from tidal.ml.learn.base import Learner, Task
from tidal.ml.learn.catalog import LEARNERS, make
from tidal.ml.learn.features import Features
from tidal.ml.learn.keras_adapter import KerasLearner
from tidal.ml.learn.kmeans import KMeans
from tidal.ml.learn.linear import Linear, LinearRegression, LogisticRegression, Softmax
from tidal.ml.learn.metrics import METRICS, Prequential
from tidal.ml.learn.river_adapter import RiverLearner

__all__ = [
    "LEARNERS",
    "METRICS",
    "Features",
    "KMeans",
    "KerasLearner",
    "Learner",
    "Linear",
    "LinearRegression",
    "LogisticRegression",
    "Prequential",
    "RiverLearner",
    "Softmax",
    "Task",
    "make",
]
