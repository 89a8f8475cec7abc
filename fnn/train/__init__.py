"""Training: a train state, a pure step for either gradient method, a loop
that compiles a whole epoch into one call, evaluation and prediction.

    import fnn
    from fnn import train

    model = fnn.models.mlp((128,), num_classes=10)
    opt = fnn.optim.adam(1e-3)
    ts = train.init_state(model, opt, fnn.key(0), (None, 8, 8, 1))
    ts, history = train.fit(model, fnn.losses.softmax_cross_entropy, opt, ts, (x, y),
                            epochs=20, batch_size=32, validation_data=(x_val, y_val))
    train.evaluate(model, ts.params, ts.state, x_test, y_test, loss=fnn.losses.softmax_cross_entropy)
    train.plot_history(history, "curves.png")

* :class:`TrainState` ``(params, state, opt_state, step, key)`` and :func:`init_state`;
* :func:`train_step` — ``step(ts, x, y) -> (ts, out)``, pure, for ``jax.jit``
  (donate the state) or NumPy; :func:`gradient_stats`;
* :func:`fit` — a short loop over epochs (:mod:`fnn.train.epoch`: ``lax.scan``
  over the shuffled batches of an epoch, the last partial batch as one extra
  step), progress bar, history, gradient statistics, a clean stop on a
  non-finite loss, checkpoints and exact resume;
* callbacks (:mod:`fnn.train.callbacks`): :class:`Callback`,
  :class:`StopTraining`, :class:`EarlyStopping`, :class:`ReduceLROnPlateau`,
  :class:`Checkpoint` — ``fit(..., callbacks=[...])``; and the loggers
  (:mod:`fnn.train.loggers`): :class:`CSVLogger`, :class:`TensorBoard`;
* :func:`evaluate`, :func:`predict` — eval mode, batched, compiled once;
* :class:`History`, :func:`plot_history`.
"""

from fnn.train.callbacks import Callback, Checkpoint, EarlyStopping, ReduceLROnPlateau, StopTraining
from fnn.train.loggers import CSVLogger, TensorBoard
from fnn.train.evaluate import evaluate, predict
from fnn.train.history import History, plot_grad_stats, plot_history
from fnn.train.loop import fit
from fnn.train.state import TrainState, init_state
from fnn.train.step import eval_batch, gradient_stats, step_key, train_step

__all__ = [
    "TrainState",
    "init_state",
    "train_step",
    "step_key",
    "eval_batch",
    "gradient_stats",
    "fit",
    "Callback",
    "StopTraining",
    "EarlyStopping",
    "ReduceLROnPlateau",
    "CSVLogger",
    "TensorBoard",
    "Checkpoint",
    "evaluate",
    "predict",
    "History",
    "plot_history",
    "plot_grad_stats",
]
