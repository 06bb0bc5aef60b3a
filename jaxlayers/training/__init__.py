"""The training side, one module per reason to change; each imports only the floors below it.

From the top (one path: ``jaxlayers train`` -> ``loop.fit`` -> ``loop._train`` -> a strategy's epoch):

* :mod:`~jaxlayers.training.loop` -- the one host loop: ``fit``, ``fit_many``, ``grid``; the
  arguments checked once, the callbacks entered, the checkpoint opened, the epochs, the signals.
* :mod:`~jaxlayers.training.run` -- after training: ``load_run`` -> ``Run``
  (model, parameters, preprocessing, history; ``predict`` on raw inputs).
* :mod:`~jaxlayers.training.rundir` -- the run directory as a callback of the loop (``RunDir``:
  lock, ``config.json``, ``metrics.jsonl``, ``curves.png``, ``summary.json``).
* :mod:`~jaxlayers.training.plots` -- ``plot_history``, the confusion matrix (matplotlib, Agg).
* :mod:`~jaxlayers.training.resume` -- the checkpoint before training: may it be replaced, does a
  resume match this run (``open_checkpoint``, ``run_info``, ``check_resume_metadata``).
* :mod:`~jaxlayers.training.evaluation` -- ``evaluate``: test-mode accuracy on device.
* :mod:`~jaxlayers.training.preflight` -- every check a run can fail before it trains (data, optimizer,
  mesh, memory), in ``preflight``.
* :mod:`~jaxlayers.training.strategies` -- how the one epoch function runs:
  on one device, vmapped over ``K`` models, or sharded over a device mesh;
  the only compile cache.
* :mod:`~jaxlayers.training.epoch` -- the pure epoch: the permutation-key
  rule, the scanned steps, the validation count, the best-epoch rule.
* :mod:`~jaxlayers.training.state` -- ``TrainState``, the step, ``init_train_state``.
* :mod:`~jaxlayers.training.memory` -- the memory a run needs (``jax.eval_shape``,
  nothing allocated) and the refusal of one that cannot fit.
* :mod:`~jaxlayers.training.hooks` -- the ``Callback`` protocol (``on_start``, ``on_epoch``,
  ``on_checkpoint``, ``on_end``), ``RunStart``, ``ProgressBar``.
* :mod:`~jaxlayers.training.checkpoint` -- the safetensors format, atomic writes, the metadata check.
* :mod:`~jaxlayers.training.results` -- ``History``, ``EpochReport``, ``FitResult``.
* :mod:`~jaxlayers.training.signals` -- SIGINT/SIGTERM deferred to epoch boundaries.
* :mod:`~jaxlayers.training.config` -- ``TrainConfig``, ``steps_per_epoch`` and the optax optimizer.

``jaxlayers.train`` re-exports the public names. The layering is enforced by
import-linter (``[tool.importlinter]`` in ``pyproject.toml``).
"""
