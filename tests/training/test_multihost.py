"""Multi-process runs: 2 processes x 2 CPU devices train and evaluate like 1 process x 4;
coordinates; read-back to the host; console lines; paths."""

import dataclasses
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import datasets, tfds_source
from otcxr_jax.evaluation import diagnostics, features
from otcxr_jax.models import factory
from otcxr_jax.modes import pretrain, segment
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import distributed, loop, sharding
from tests.tiny import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "2",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
_CLUSTER_ENV = (*_SLURM, "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
                distributed.ENV_COORDINATOR_ADDRESS, distributed.ENV_NUM_PROCESSES,
                distributed.ENV_PROCESS_ID, distributed.JAX_ENV_COORDINATOR_ADDRESS)


def _config(data_dir):
  """The tiny pretraining config with SGD at a small learning rate.

  Measured on the four-stage tiny network the tests used before (tests/tiny.py): after 3 steps
  at base rate 0.5 (or 0.05), 1 and 4 devices of one process end 1% of the update apart (float32
  reduction order, amplified by large steps); at 0.005, 2e-5 apart.
  """
  c = tiny_config(data_dir)
  c.optim.name = "sgd"
  c.optim.base_learning_rate = 0.005
  c.optim.warmup_steps = 0
  c.train.checkpoint_every = 0  # checkpoints at the end of each run only
  return c


def _cache_from_every_process() -> None:
  """Lets this process write its compiled programs to JAX's persistent cache, as process 0 does.

  JAX writes cache entries from process 0 only (``jax._src.compiler._cache_write``: contention on
  shared filesystems such as GCS), and a program's key differs between the processes of a run. So
  process 1 of every multi-process run here compiled each of its programs itself, on every run of
  the suite. Its entries have keys of their own and the folder is local, so process 1 writes them
  too. Test-only, through JAX's private modules; without them nothing changes.
  """
  try:
    from jax._src import compilation_cache, compiler  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  put = getattr(compilation_cache, "put_executable_and_time", None)
  if jax.process_index() == 0 or put is None or not hasattr(compiler, "_cache_write"):
    return

  def write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks):
    if host_callbacks:
      return
    try:
      put(cache_key, module_name, executable, backend, int(compile_time_secs))
    except Exception as e:  # pylint: disable=broad-except
      # As JAX does: a cache that cannot be written costs time, never the run.
      warnings.warn(f"Error writing persistent compilation cache entry for {module_name!r}: {e}")

  compiler._cache_write = write  # pylint: disable=protected-access


def worker(data_dir: str, workdir: str, cache_dir: str) -> None:
  """One process of the multi-process run: 2 CPU devices, coordinates from the environment.

  A 3-step run is stopped after step 2 (its checkpoint written by both processes), then run
  again: both processes restore step 2 and train step 3.
  """
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", 2)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Process 0 stores compiled programs, so the resumed run compiles nothing again.
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  config = _config(data_dir)
  config.train.num_steps = 3  # the learning-rate schedule spans 3 steps in both runs
  assert distributed.initialize(config)
  assert (jax.process_count(), jax.local_device_count(), jax.device_count()) == (2, 2, 4)
  _cache_from_every_process()
  # The resumed run, built from the same config, reuses the first run's jitted step instead of
  # tracing and lowering it again (and, in process 1 of a run whose cache holds nothing yet,
  # compiling it at XLA's default code generation, about 12 s of CPU).
  jit_train_step, steps, calls = loop.jit_train_step, [], []

  def jit_once(*args, **kwargs):
    calls.append(args)
    if not steps:
      steps.append(jit_train_step(*args, **kwargs))
    return steps[0]

  loop.jit_train_step = jit_once
  full_run = pretrain.loop_config
  pretrain.loop_config = lambda c: dataclasses.replace(full_run(c), num_steps=2)
  pretrain.run(config, workdir)
  pretrain.loop_config = full_run
  pretrain.run(config, workdir)
  assert len(calls) == 2  # both runs took their step from here


def single_worker(data_dir: str, workdir: str) -> None:
  """The multi-process run's reference: one process of 4 CPU devices, 3 steps, uninterrupted."""
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", 4)
  config = _config(data_dir)
  config.train.num_steps = 3
  pretrain.run(config, workdir)


def _labelled_rows(count: int) -> list[dict]:
  """In-memory records ``{'x': (3,) float32, 'id': text of a length varying with the row}``."""
  return [{"x": np.arange(3, dtype=np.float32) + 10 * i, "id": f"row{i}" + "+" * (i % 4)}
          for i in range(count)]


def _evaluations(config) -> dict[str, np.ndarray]:
  """Features, labels, predicted masks and ids of short splits, global batch 4.

  ``validation[:5]`` splits unevenly over 2 processes (3 and 2 examples: 2 batches of 2 and 1);
  ``validation[:1]`` leaves the second process without any example.
  """
  config.segment.batch_size = 4
  config.segment.decoder_channels = (16, 8, 8)
  encoder = factory.build_encoder(config, nnx.Rngs(0))
  fn = features.pooled_feature_fn(encoder, config.data.image_size)
  predict = segment.Predictor(config, sharding.make_mesh())
  model = segment.build_model(config, encoder)
  model.eval()
  out = {}
  for name, split in (("five", "validation[:5]"), ("one", "validation[:1]")):
    source = datasets.split_source(config, split)
    out[f"{name}_features"], out[f"{name}_labels"] = features.extract(fn, source, batch_size=4)
    out[f"{name}_predicted"], out[f"{name}_reference"], out[f"{name}_ids"] = predict(model, source)
  # The feature spread's dense maps and pooled features are read like the probe's features.
  spread = diagnostics.feature_spread(encoder, datasets.split_source(config, "validation[:5]"),
                                      image_size=config.data.image_size, batch_size=4)
  out["spread_features"] = np.asarray(list(spread.as_dict().values()))
  (doubled,), fields = features.map_split(lambda batch: (2 * batch["x"],), _labelled_rows(7),
                                          batch_size=4, keys=("x",), host_keys=("id",))
  out["rows_doubled"], out["rows_id"] = doubled, fields["id"]
  return out


def _process_rows(process: int) -> np.ndarray:
  """Process ``process``'s rows of the global array of the read-back check (2 per device)."""
  return np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * process


def features_worker(data_dir: str, out_dir: str) -> None:
  """One process of the evaluation read-back run (2 CPU devices): saves what it read back.

  The synthetic dataset is not built yet: process 0 builds it, process 1 waits and reads.
  """
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", 2)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  config = tiny_config(data_dir, mode="segment")
  assert distributed.initialize(config)
  _cache_from_every_process()
  builds = []
  ensure_built = tfds_source.ensure_built

  def counted_ensure_built(*args, **kwargs):
    builds.append(args)
    return ensure_built(*args, **kwargs)

  tfds_source.ensure_built = counted_ensure_built
  distributed.print0("a line of process 0")
  process, mesh = jax.process_index(), sharding.make_mesh()
  rows = _process_rows(process)
  host = sharding.to_host({"global": sharding.to_global(rows, mesh), "local": rows[:1],
                           "replicated": sharding.replicate(np.arange(3.0), mesh)})
  evaluations = _evaluations(config)
  np.savez(epath.Path(out_dir) / f"process_{process}.npz", builds=len(builds),
           **{f"host_{k}": v for k, v in host.items()}, **evaluations)


def preempt_worker(workdir: str) -> None:
  """Trains a linear model for up to 6 steps; only process 1 receives SIGTERM, during step 2."""
  import signal
  import optax
  from otcxr_jax.data import pipeline
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", 2)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  assert distributed.initialize(tiny_config(workdir))
  _cache_from_every_process()
  rows = np.random.RandomState(0).randn(16, 3).astype(np.float32)
  source = [{"x": r, "id": str(i)} for i, r in enumerate(rows)]
  batches = pipeline.train_iterator(source, global_batch_size=8, seed=0,
                                    transform=pipeline.select_keys(["x"]),
                                    process_index=jax.process_index(), process_count=2)

  def loss_fn(model, batch, rng):
    del rng
    return jnp.mean((model(batch["x"]) - 1.0) ** 2), {}

  def hook(step, graphdef, state):
    if step == 2 and jax.process_index() == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  config = loop.LoopConfig(num_steps=6, log_every=1, checkpoint_every=0, tensorboard=False,
                           hook_every=1)
  try:
    loop.run(name="toy", workdir=workdir, model=nnx.Linear(3, 1, rngs=nnx.Rngs(0)),
             loss_fn=loss_fn, tx=optax.sgd(0.1), batches=batches, global_batch_size=8,
             config=config, rng=jax.random.key_data(jax.random.key(0)), hooks=[hook])
  except loop.Preempted as e:
    print(f"PREEMPTED process {jax.process_index()} step {e.step}", flush=True)
  else:
    raise AssertionError("the run was not preempted")


def test_to_host_on_one_process_equals_device_get():
  mesh = sharding.make_mesh()
  tree = {"sharded": sharding.to_global(np.arange(24, dtype=np.float32).reshape(8, 3), mesh),
          "replicated": sharding.replicate(np.arange(5, dtype=np.int32), mesh),
          "host": np.ones((2, 2), bool)}
  got, expected = sharding.to_host(tree), jax.device_get(tree)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert isinstance(g, np.ndarray) and g.dtype == e.dtype
    np.testing.assert_array_equal(g, e)
  np.testing.assert_array_equal(got["sharded"], np.arange(24).reshape(8, 3))


def test_print0_prints_on_process_zero_only(monkeypatch, capsys):
  distributed.print0("first", 1, sep="-")
  assert capsys.readouterr().out == "first-1\n"
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert not distributed.is_main()
  distributed.print0("second")
  assert capsys.readouterr().out == ""


@pytest.fixture
def clean_env(monkeypatch):
  for name in _CLUSTER_ENV:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_coordinates_come_from_config_then_environment(clean_env):
  config = config_lib.base_config()
  assert distributed.coordinates(config) == distributed.Coordinates(None, None, None)
  env = {distributed.ENV_COORDINATOR_ADDRESS: "10.0.0.2:1234",
         distributed.ENV_NUM_PROCESSES: "4", distributed.ENV_PROCESS_ID: "3"}
  assert distributed.coordinates(config, env) == distributed.Coordinates("10.0.0.2:1234", 4, 3)
  config.distributed.coordinator_address = "host0:99"
  config.distributed.num_processes = 8
  assert distributed.coordinates(config, env) == distributed.Coordinates("host0:99", 8, 3)
  assert distributed.coordinates(
      config_lib.base_config(), {distributed.JAX_ENV_COORDINATOR_ADDRESS: "h:1"}
  ).coordinator_address == "h:1"


@pytest.mark.parametrize("env, match", [
    ({distributed.ENV_NUM_PROCESSES: "two"}, "OTCXR_NUM_PROCESSES='two'"),
    ({distributed.ENV_NUM_PROCESSES: "0"}, "OTCXR_NUM_PROCESSES='0'"),
    ({distributed.ENV_PROCESS_ID: "-1"}, "OTCXR_PROCESS_ID='-1'"),
    ({distributed.ENV_COORDINATOR_ADDRESS: "10.0.0.2"}, "OTCXR_COORDINATOR_ADDRESS='10.0.0.2'"),
    ({distributed.ENV_NUM_PROCESSES: "2", distributed.ENV_PROCESS_ID: "2"}, "process id 2"),
])
def test_bad_environment_is_refused_by_name(env, match):
  with pytest.raises(ValueError, match=match):
    distributed.coordinates(config_lib.base_config(), env)


def test_single_process_runs_initialise_nothing(clean_env):
  config = config_lib.base_config()
  assert distributed.detected_cluster() is None
  assert not distributed.initialize(config)            # a laptop: nothing set, no cluster
  for name, value in _SLURM.items():
    clean_env.setenv(name, value)
  assert distributed.detected_cluster() == "SlurmCluster"  # JAX's own detection
  config.distributed.num_processes = 1
  assert not distributed.initialize(config)            # forced single-process inside a cluster
  assert not jax.distributed.is_initialized()


def test_partial_coordinates_without_cluster_name_what_is_missing(clean_env):
  config = config_lib.base_config()
  config.distributed.num_processes = 2
  with pytest.raises(ValueError, match="distributed.coordinator_address, "
                                       "distributed.process_id as well"):
    distributed.initialize(config)
  assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("field, value", [
    ("coordinator_address", "10.0.0.2"), ("coordinator_address", "10.0.0.2:0"),
    ("coordinator_address", ":1234"), ("num_processes", -1), ("process_id", -2),
    ("process_id", True),
])
def test_config_validation_names_the_distributed_field(field, value):
  config = config_lib.base_config()
  with config.unlocked():
    config.distributed[field] = value
  with pytest.raises(config_lib.ConfigError, match=f"config.distributed.{field}="):
    config_lib.validate(config)


def test_config_validation_checks_process_id_against_count():
  config = config_lib.base_config()
  config.distributed.num_processes, config.distributed.process_id = 2, 2
  with pytest.raises(config_lib.ConfigError, match="config.distributed.process_id=2"):
    config_lib.validate(config)
  config.distributed.process_id = 1
  config.distributed.coordinator_address = "10.0.0.2:1234"
  config_lib.validate(config)


def test_mesh_orders_devices_by_process_and_batches_keep_row_order():
  devices = jax.devices()[:4]
  mesh = sharding.make_mesh(devices[::-1])
  assert [d.id for d in mesh.devices] == sorted(d.id for d in devices)
  batch = {"image": np.arange(8 * 3).reshape(8, 3)}
  out = sharding.to_global(batch, mesh)["image"]
  assert out.shape == (8, 3)
  for shard in out.addressable_shards:  # device k of the mesh holds rows [2k, 2k + 2)
    k = list(mesh.devices).index(shard.device)
    np.testing.assert_array_equal(shard.data, batch["image"][2 * k:2 * k + 2])
  with pytest.raises(ValueError, match=r"shape \(6, 3\) does not split over the 4 local"):
    sharding.to_global({"image": np.zeros((6, 3))}, mesh)


def test_checkpoint_paths_local_made_absolute_remote_untouched(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert str(ckpt_lib.absolute("runs/a")) == str(tmp_path / "runs" / "a")
  assert str(ckpt_lib.absolute("~/runs/a")) == str(tmp_path / "home" / "runs" / "a")
  assert str(ckpt_lib.absolute(tmp_path / "x" / ".." / "y")) == str(tmp_path / "y")
  for remote in ("gs://bucket/otcxr/run1", epath.Path("gs://bucket/otcxr/run1")):
    path = ckpt_lib.absolute(remote)
    assert isinstance(path, epath.Path) and str(path) == "gs://bucket/otcxr/run1"
    assert str(path / "checkpoints" / "pretrain") == "gs://bucket/otcxr/run1/checkpoints/pretrain"
  assert ckpt_lib.is_remote("s3://b/k") and not ckpt_lib.is_remote("/data/gs:/odd")


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_NTASKS_PER_NODE": "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}, [0, 1, 2, 3]),
    ({"SLURM_STEP_TASKS_PER_NODE": "1(x2)", "CUDA_VISIBLE_DEVICES": "0,1"}, [0, 1]),
    ({"SLURM_NTASKS_PER_NODE": "8", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, None),
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x2)", "CUDA_VISIBLE_DEVICES": "0,1"}, None),
    ({"SLURM_NTASKS_PER_NODE": "1"}, None),
])
def test_one_slurm_task_per_node_keeps_every_gpu_of_the_node(env, expected):
  assert distributed.slurm_local_device_ids(env) == expected
