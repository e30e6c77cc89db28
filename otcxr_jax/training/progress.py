"""A progress line for long runs: step, loss, images per second and time left."""

from __future__ import annotations

import time
from typing import Mapping


def format_duration(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Measures throughput between reports; the first report excludes compilation time."""

  def __init__(self, *, total_steps: int, examples_per_step: int, start_step: int = 0,
               name: str = "train"):
    self.total_steps, self.examples_per_step, self.name = total_steps, examples_per_step, name
    self._last_step, self._last_time = start_step, None

  def start(self, step: int) -> None:
    """Call after the first (compiling) step so rates measure steady-state steps."""
    self._last_step, self._last_time = step, time.perf_counter()

  def line(self, step: int, metrics: Mapping[str, float]) -> tuple[str, float]:
    """Returns the progress line and the images/s since the previous call."""
    now = time.perf_counter()
    rate = 0.0
    if self._last_time is not None and step > self._last_step:
      rate = (step - self._last_step) * self.examples_per_step / (now - self._last_time)
    self._last_step, self._last_time = step, now
    eta = ((self.total_steps - step) * self.examples_per_step / rate) if rate > 0 else float("nan")
    shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    eta_s = format_duration(eta) if eta == eta else "?"
    return (f"[{self.name}] step {step}/{self.total_steps} | {shown} | {rate:.1f} img/s | "
            f"ETA {eta_s}", rate)
