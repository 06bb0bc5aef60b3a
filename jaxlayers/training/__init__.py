"""The training side, one module per reason to change; each imports only the floors below it.

From the top:

* :mod:`~jaxlayers.training.rundir` -- the run directory (config, metrics,
  curves, checkpoint, summary), its lock and ``fit(..., run_dir=, verbose=)``;
  the CLI and the library write it through this one module.
* :mod:`~jaxlayers.training.run` -- after training: ``load_run`` -> ``Run``
  (model, parameters, preprocessing, history; ``predict`` on raw inputs).
* :mod:`~jaxlayers.training.loop` -- the one host loop: ``fit``, ``fit_many``,
  ``evaluate``, data checks, checkpoint/resume, history and callbacks.
* :mod:`~jaxlayers.training.plots` -- ``plot_history`` (matplotlib, Agg).
* :mod:`~jaxlayers.training.strategies` -- how the one epoch function runs:
  on one device, vmapped over ``K`` models, or sharded over a device mesh;
  the only compile cache.
* :mod:`~jaxlayers.training.epoch` -- the pure epoch: the permutation-key
  rule, the scanned steps, the validation count, the best-epoch rule.
* :mod:`~jaxlayers.training.state` -- ``TrainState``, the step, ``init_train_state``.
* :mod:`~jaxlayers.training.memory` -- the memory a run needs (``jax.eval_shape``,
  nothing allocated) and the refusal of one that cannot fit.
* :mod:`~jaxlayers.training.config` -- ``TrainConfig`` and the optax optimizer.
* :mod:`~jaxlayers.training.checkpoint` -- the safetensors format, atomic writes.
* :mod:`~jaxlayers.training.results` -- ``History``, ``EpochReport``, ``FitResult``.
* :mod:`~jaxlayers.training.signals` -- SIGINT/SIGTERM deferred to epoch boundaries.

``jaxlayers.train`` re-exports the public names. The layering is enforced by
import-linter (``[tool.importlinter]`` in ``pyproject.toml``).
"""
