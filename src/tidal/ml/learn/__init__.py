"""Online learners: models that learn from the stream, batch-first (see :mod:`.base`)."""

from tidal.ml.learn.base import Learner, Task
from tidal.ml.learn.linear import Linear, LinearRegression, LogisticRegression, Softmax

__all__ = ["Learner", "Linear", "LinearRegression", "LogisticRegression", "Softmax", "Task"]
