"""Data-parallel training over a device mesh, on one process or many.

The design is JAX's own: a :class:`jax.sharding.Mesh` of devices, arrays
placed with :class:`~jax.sharding.NamedSharding`, and one ``jax.jit`` whose
partitioner (GSPMD) splits the program. Each global minibatch ``(B, D)`` is
sharded over the mesh along its batch axis, ``B / n`` rows per device; the
parameters, running statistics and optimizer state are replicated. Nothing in
the model changes: the network's ``jnp.mean``/``jnp.sum`` over the batch axis
-- the batchnorm moments, the sums in its hand-derived backward pass, the
weight gradients ``x.T @ g``, the loss -- are reductions over a sharded axis,
which the partitioner turns into all-reduces. So batch normalisation uses
global-batch statistics and the result is the one-device program's, up to
the order of floating-point additions. Dropout's mask is drawn from a
counter (``lax.iota``) and is the same bits on any number of devices.

(The alternative, ``shard_map`` with :func:`jaxlayers.batchnorm`'s
``axis_name=`` collectives written by hand, is what that op's ``axis_name``
exists for; it is not used here because per-shard code would draw each
shard's dropout mask from the same key, so it would neither match the
one-device run nor be independent across shards.)

Multi-process runs (several hosts, or several processes on one) go through
``jax.distributed``: :func:`initialize_distributed` connects the processes,
the mesh spans every process's devices, every process runs the same program
(SPMD), and each process transfers only its slice of every global batch to its
own devices (``jax.make_array_from_process_local_data``). Every process holds
the whole dataset in host memory and draws the same permutation from the
replicated PRNG key, so the global batches are the one-process run's.

Entry points: :func:`make_data_mesh`, :func:`initialize_distributed`,
:func:`replicate`, :func:`host_copy`, and ``jaxlayers.train.fit(..., mesh=)``,
whose epoch is the one-device epoch compiled over the mesh
(:class:`jaxlayers.training.strategies.DataMesh`).
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlayers._checks import check_fields, check_int, check_number, optional, require

__all__ = [
    "DATA_AXIS",
    "as_auto_mesh",
    "Distributed",
    "DistributedInitError",
    "check_batch_size",
    "host_copy",
    "initialize_distributed",
    "describe",
    "make_data_mesh",
    "replicate",
    "request_cpu_devices",
]

DATA_AXIS = "data"


class DistributedInitError(RuntimeError):
    """A process could not join a multi-process run (coordinator unreachable, bad settings)."""


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Distributed:
    """How this process joins a multi-process run (see :func:`initialize_distributed`).

    Attributes:
      coordinator: ``"HOST:PORT"`` of process 0, which runs the coordination
        service there (IPv6 as ``"[::1]:PORT"``). Every process passes the same.
      num_processes: ``P >= 1``, the number of processes in the run.
      process_id: this process's index in ``[0, P)``.
      timeout_s: seconds to wait for the coordinator, and then for all
        processes to register with it (``> 0``).
      local_devices: CPU only: how many CPU devices this process simulates
        (``jax_num_cpu_devices``); ``None`` leaves JAX's default (1, or
        ``--xla_force_host_platform_device_count``).
    """

    coordinator: str
    num_processes: int
    process_id: int
    timeout_s: float = 60.0
    local_devices: int | None = None

    def __post_init__(self) -> None:
        _parse_address(self.coordinator)
        owner = "Distributed"
        check_fields(
            self,
            owner,
            num_processes=partial(check_int, minimum=1),
            process_id=partial(check_int, minimum=0),
            timeout_s=partial(check_number, low=0.0, low_open=True),
            local_devices=optional(partial(check_int, minimum=1)),
        )
        require(
            self.process_id < self.num_processes,
            owner,
            f"process_id must lie in [0, num_processes) = [0, {self.num_processes}), got {self.process_id}",
        )


def _parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; ``"[v6]:PORT"`` -> ``("v6", port)``."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"coordinator must be 'HOST:PORT', got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ValueError(f"coordinator must be 'HOST:PORT' with a port in [1, 65535], got {address!r}")
    return host, port


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Poll a TCP connection to the coordinator until it accepts one, for at most ``timeout_s``."""
    host, port = _parse_address(address)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DistributedInitError(
                f"could not reach the coordinator at {address} within {timeout_s:g} s ({last}). "
                "Start process 0 with the same coordinator address (it runs the coordination service), "
                "and check the host, port and firewall."
            )
        try:
            with socket.create_connection((host, port), timeout=min(1.0, remaining)):
                return
        except OSError as e:
            last = e
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))


_initialized: Distributed | None = None


def initialize_distributed(dist: Distributed) -> None:
    """Join a multi-process run: ``jax.distributed.initialize`` with a bounded, explained wait.

    Must run before anything initialises a JAX backend (any computation,
    ``jax.devices()``, ``jax.device_put``). Sets CPU collectives to gloo
    (``jax_cpu_collectives_implementation``), so that CPU-only processes can
    all-reduce over TCP, and -- with ``dist.local_devices`` -- the number of
    simulated CPU devices. Process 0 runs the coordination service, bound to
    the coordinator address only (JAX's default binds every interface).

    A process other than 0 first polls the coordinator's port: if nothing
    accepts a connection within ``timeout_s`` it raises
    :class:`DistributedInitError` -- a Python exception, with the address.
    Once connected, JAX waits up to ``timeout_s`` more for all processes to
    register; if one never does, :class:`DistributedInitError` is raised
    too (JAX itself would abort the process, SIGABRT; jaxlayers creates its
    client so that the failure is an exception). Every wait is bounded.

    Calling it again with the same settings does nothing.

    Args:
      dist: a :class:`Distributed`.

    Raises:
      DistributedInitError: the coordinator was unreachable for ``timeout_s``,
        or the processes did not all register within ``timeout_s``;
        already initialised with other settings; or a JAX backend is already
        initialised in this process.
    """
    global _initialized
    if not isinstance(dist, Distributed):
        raise TypeError(f"initialize_distributed: expected a Distributed, got {type(dist).__name__}")
    if _initialized is not None:
        if _initialized == dist:
            return
        raise DistributedInitError(f"already initialised as {_initialized}; cannot re-initialise as {dist}")
    from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

    if xla_bridge.backends_are_initialized():
        raise DistributedInitError(
            "initialize_distributed must run before any JAX computation in this process "
            "(a backend is already initialised: something called jax.devices(), device_put, or ran an op)"
        )
    where = f"process {dist.process_id} of {dist.num_processes}"
    if dist.process_id != 0:
        try:
            _wait_for_coordinator(dist.coordinator, dist.timeout_s)
        except DistributedInitError as e:
            raise DistributedInitError(f"{where}: {e}") from None
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if dist.local_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(dist.local_devices))
    timeout = max(1, math.ceil(dist.timeout_s))
    try:
        _initialize_jax_distributed(
            coordinator_address=dist.coordinator,
            num_processes=dist.num_processes,
            process_id=dist.process_id,
            initialization_timeout=timeout,
            coordinator_bind_address=dist.coordinator,
        )
    except Exception:  # JAX's own error says little (a C++ type name): name what did not happen
        raise DistributedInitError(
            f"{where}: the {dist.num_processes} processes did not all register with the coordinator at "
            f"{dist.coordinator} within {timeout} s. Start every process with the same coordinator address and "
            "process count, or raise the timeout (--init-timeout, Distributed.timeout_s)."
        ) from None
    _initialized = dist


def _initialize_jax_distributed(**kwargs) -> None:
    """``jax.distributed.initialize(**kwargs)``, but a failed connection raises instead of aborting the process.

    JAX's distributed client aborts the process (``LOG(FATAL)``, SIGABRT, exit 134 with a C++ stack trace)
    when it cannot register with the coordination service in time, unless it was created with a
    ``missed_heartbeat_callback``; then ``connect`` raises a ``RuntimeError``. ``jax.distributed.initialize``
    does not expose that argument, so the client factory it calls is wrapped for the duration of the call.
    On failure the half-initialised state is cleared, so that the process exits normally.
    """
    import contextlib

    from jax._src import distributed as jax_distributed  # the client factory: no public equivalent

    module = jax_distributed._jax
    factory = module.get_distributed_runtime_client

    def client(*args, **kw):
        kw.setdefault("missed_heartbeat_callback", lambda *status: None)
        kw.setdefault("shutdown_on_destruction", False)
        return factory(*args, **kw)

    module.get_distributed_runtime_client = client
    try:
        jax.distributed.initialize(**kwargs)
    except Exception:
        state = jax_distributed.global_state
        state.client = None
        if state.service is not None:
            with contextlib.suppress(Exception):
                state.service.shutdown()
            state.service = None
        raise
    finally:
        module.get_distributed_runtime_client = factory


# ---------------------------------------------------------------------------
# Meshes and placement
# ---------------------------------------------------------------------------


def make_data_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh (axis ``"data"``) for data-parallel training.

    Args:
      num_devices: how many devices; ``None``: every device of every process
        (``jax.devices()``). In a multi-process run the count must be a
        multiple of the number of processes and each process contributes its
        first ``num_devices / P`` local devices.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(num_devices,)`` with axis
      ``"data"`` (``AxisType.Auto``: the partitioner places the collectives).

    Raises:
      ValueError: ``num_devices < 1``, more devices than there are, or not a
        multiple of the process count.
    """
    nproc = jax.process_count()
    if num_devices is None:
        devices = jax.devices()
    else:
        if not isinstance(num_devices, (int, np.integer)) or isinstance(num_devices, bool) or num_devices < 1:
            raise ValueError(f"make_data_mesh: num_devices must be an int >= 1, got {num_devices!r}")
        if num_devices % nproc:
            raise ValueError(
                f"make_data_mesh: {num_devices} devices cannot be split evenly over {nproc} processes; "
                f"use a multiple of {nproc}"
            )
        per = num_devices // nproc
        devices = []
        for p in range(nproc):
            mine = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
            if len(mine) < per:
                backend = jax.default_backend()
                hint = (
                    " (on CPU, simulate more with jax.config.update('jax_num_cpu_devices', N) or "
                    "XLA_FLAGS=--xla_force_host_platform_device_count=N, set before JAX starts)"
                    if backend == "cpu"
                    else ""
                )
                raise ValueError(
                    f"make_data_mesh: {num_devices} devices requested ({per} per process) but process {p} "
                    f"has {len(mine)} {backend} device(s){hint}"
                )
            devices.extend(mine[:per])
    return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def request_cpu_devices(n: int) -> bool:
    """Ask JAX's CPU backend for at least ``n`` (simulated) devices, if no backend has started.

    Sets ``jax_num_cpu_devices`` unless a count of at least ``n`` is already
    configured (that option or ``XLA_FLAGS=--xla_force_host_platform_device_count``).
    It only shapes the CPU backend: where an accelerator is the default
    backend, its devices are used and this changes nothing. CPU devices are
    partitions of one host: they share its cores and memory, so they show
    that a program is correct on ``n`` devices, not that it is faster.

    Args:
      n: devices wanted, ``>= 1``.

    Returns:
      Whether the setting was changed (``False`` also when a backend had
      already started; :func:`make_data_mesh` then reports a shortfall).
    """
    import os
    import re

    from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

    if xla_bridge.backends_are_initialized():
        return False
    configured = jax.config.jax_num_cpu_devices
    if configured < 0:
        m = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
        configured = int(m.group(1)) if m else 1
    if configured >= n:
        return False
    jax.config.update("jax_num_cpu_devices", int(n))
    return True


def as_auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis ``Auto`` (GSPMD places the collectives)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. jaxlayers.parallel.make_data_mesh()), got {mesh!r}")
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


def check_batch_size(mesh: Mesh, batch_size: int, what: str = "batch_size") -> None:
    """Raise a ``ValueError`` unless the mesh's device count divides ``batch_size``.

    Raises:
      ValueError: naming both numbers and the nearest batch sizes that work.
    """
    n = mesh.devices.size
    if batch_size % n:
        lo, hi = (batch_size // n) * n, -(-batch_size // n) * n
        options = f"{lo} or {hi}" if lo else f"{hi}"
        raise ValueError(
            f"{what} {batch_size} cannot be split evenly over the mesh's {n} devices; "
            f"data parallelism needs a multiple of {n} (e.g. {options})"
        )


def _put(sharding: NamedSharding, host: np.ndarray) -> jax.Array:
    """A global array from the same host value in every process."""
    return jax.make_array_from_process_local_data(sharding, host, host.shape)


def replicate(tree, mesh: Mesh):
    """Copies of every leaf of ``tree`` on every device of ``mesh`` (typed PRNG keys included).

    In a multi-process run every process must pass the same values (as
    :func:`jaxlayers.train.fit` does: same seed, same initialisation).

    Args:
      tree: a pytree of arrays (e.g. a :class:`jaxlayers.train.TrainState`).
      mesh: the mesh.

    Returns:
      The same pytree of global arrays, sharded ``PartitionSpec()`` (replicated).
    """
    sharding = NamedSharding(mesh, P())

    def put(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = host_copy(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(_put(sharding, data), impl=jax.random.key_impl(leaf))
        return _put(sharding, host_copy(leaf))

    return jax.tree.map(put, tree)


def host_copy(tree):
    """Host NumPy copies of a pytree of single-device, fully addressable or fully replicated arrays.

    Works in a multi-process run for replicated arrays (each process reads its
    own copy), where ``np.asarray`` of a sharded global array would fail.
    """

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError("host_copy: an array sharded over other processes' devices has no local copy")
            leaf = leaf.addressable_data(0)
        return np.array(leaf, copy=True)

    return jax.tree.map(get, tree)


def describe(mesh: Mesh) -> str:
    """One line about a mesh: ``"8 cpu devices in 1 process (simulated: ...)"``."""
    import os

    devices = list(mesh.devices.flat)
    platforms = sorted({d.platform for d in devices})
    nproc = len({d.process_index for d in devices})
    text = f"{len(devices)} {'/'.join(platforms)} device{'s' * (len(devices) != 1)}"
    text += f" in {nproc} process{'es' * (nproc != 1)}, data-parallel"
    if platforms == ["cpu"] and len(devices) > nproc:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        text += f" (simulated CPU devices: they share this machine's {cores} cores)"
    return text
