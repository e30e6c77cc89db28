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


#: Seconds between the progress lines of a pass over a split (a shorter pass prints none).
PASS_EVERY_S = 15.0


class PassProgress:
  """Progress of one pass over ``total`` examples (feature extraction, scoring): a line
  ``<prefix>: done/total images | img/s | ETA`` at most every ``every_s`` seconds, the rate
  measured from the end of the first batch (which compiles)."""

  def __init__(self, prefix: str, total: int, *, every_s: float = PASS_EVERY_S,
               clock=None):
    self.prefix, self.total, self.every_s = prefix, total, every_s
    self._clock = clock or time.perf_counter
    self._first = None  # (examples done, time) after the first batch
    self._last_time = self._clock()

  def update(self, done: int) -> str | None:
    """``done`` examples processed so far: the line to print, or None when none is due."""
    now = self._clock()
    if self._first is None:
      self._first = (done, now)
    if now - self._last_time < self.every_s or done >= self.total:
      return None
    self._last_time = now
    examples, elapsed = done - self._first[0], now - self._first[1]
    rate = examples / elapsed if examples > 0 and elapsed > 0 else 0.0
    eta = format_duration((self.total - done) / rate) if rate > 0 else "?"
    return f"{self.prefix}: {done:,}/{self.total:,} images | {rate:.1f} img/s | ETA {eta}"
