"""Every pretraining method's objective, by method name: OTCXR's and the baselines'.

Each entry pairs the frozen dataclass of the method's hyperparameters (with a ``validate()``
method naming the first invalid field) with its ``(loss, metrics)`` function. The keys are the one
list of pretraining method names: ``config_lib.METHODS`` (the config sections and their checks)
and ``methods.METHODS`` (each method's network, loss and target schedule) follow it, in this
order, OTCXR first.

Adding a method: its loss and hyperparameters in ``objectives/<method>.py`` and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from otcxr_jax.objectives import barlow_twins, byol, otcxr, simclr, vicreg, vicregl


class Objective(NamedTuple):
  """A pretraining objective: its hyperparameters' config class and its ``(loss, metrics)``
  function."""

  config: type
  loss: Callable[..., Any]


OBJECTIVES: dict[str, Objective] = {
    "otcxr": Objective(otcxr.OTCXRObjectiveConfig, otcxr.otcxr_loss),
    "simclr": Objective(simclr.SimCLRConfig, simclr.nt_xent_loss),
    "byol": Objective(byol.BYOLConfig, byol.byol_loss),
    "barlow_twins": Objective(barlow_twins.BarlowTwinsConfig, barlow_twins.barlow_twins_loss),
    "vicreg": Objective(vicreg.VICRegConfig, vicreg.vicreg_loss),
    "vicregl": Objective(vicregl.VICRegLConfig, vicregl.vicregl_loss),
}
