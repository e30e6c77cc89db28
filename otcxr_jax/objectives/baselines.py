"""Registry of the baseline self-supervised objectives, by name.

Each entry pairs a frozen config class with its loss function. For every baseline but BYOL the
config's fields are the loss's keyword arguments::

  config_cls, loss_fn = BASELINES["vicreg"]
  loss, metrics = loss_fn(z_s, z_t, **dataclasses.asdict(config_cls(sim_coeff=10.0)))

BYOL's loss has no hyperparameter; its config holds the target network's EMA schedule
(`byol.byol_tau(step, total_steps, **dataclasses.asdict(config))`, then `byol.ema_update`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from otcxr_jax.objectives import barlow_twins, byol, simclr, vicreg, vicregl


class Baseline(NamedTuple):
  """A baseline objective: its config class and its ``(loss, metrics)`` function."""

  config: type
  loss: Callable[..., Any]


BASELINES: dict[str, Baseline] = {
    "simclr": Baseline(simclr.SimCLRConfig, simclr.nt_xent_loss),
    "byol": Baseline(byol.BYOLConfig, byol.byol_loss),
    "barlow_twins": Baseline(barlow_twins.BarlowTwinsConfig, barlow_twins.barlow_twins_loss),
    "vicreg": Baseline(vicreg.VICRegConfig, vicreg.vicreg_loss),
    "vicregl": Baseline(vicregl.VICRegLConfig, vicregl.vicregl_loss),
}
