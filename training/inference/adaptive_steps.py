"""Adaptive sampling step counts: simple prompts get fewer Euler steps than complex ones.

Euler's error on a rectified-flow ODE grows with how much the velocity field turns along the
trajectory; a straight path needs one step. A cheap **probe** measures that turn for one prompt
and its noise: the guided velocity at the sampler's first time (t = 1, on the noise) and, after
one Euler jump from there, at the next probe time (default t = 0.1, under the same timestep
shift as the sampler), the estimate being the mean of ``||v(t_i+1) - v(t_i)|| / ||v(t_i)||``: how
far the field at the end of a one-step path has turned from the straight line it started on.
That is ``len(probe_ts)`` guided evaluations: 2 DiT passes each with plain CFG, 1 without. The
first (t = 1) is the Euler sampler's first evaluation too and is reused (``sample_euler``), so a
two-time probe costs one extra evaluation; every probe pass counts against the budget (and in
``Timer``'s ``dit_passes``). Why t = 0.1: on the benchmark's toy model (bench/generate_
adaptive.py), over 30 prompt/noise pairs (seeds 1000-3000, not the benchmark's), the estimate's
Spearman correlation with the fixed schedule's per-prompt error against the 50-step teacher was
about 0.75 at 4, 8 and 16 steps for t = 0.1 and 0.05, 0.4 at 0.2, and -0.5 at 0.5 (the early
change measures the field's scale, which the relative error divides out).

The **picker** maps estimates to steps in ``[min_steps, max_steps]``. Minimising the summed
Euler error ``sum_i c_i / n_i`` at a fixed total ``sum_i n_i`` gives ``n_i ~ sqrt(c_i)``
(Lagrange). The estimate is not the error constant itself: on the toy model's held-out seeds the
per-prompt error grew as ``estimate ** 1.6`` (log-log slope 1.4-1.85 at 4, 8 and 16 steps), so
``c_i ~ e_i ** 1.6`` and ``n_i = scale * e_i ** power`` with ``power = 0.8``. The budget is the average
of a fixed schedule, ``budget`` steps of ``k`` DiT passes each (k = 2 with CFG): adaptive
prompts may spend ``budget * k - probe_passes`` passes on average, i.e. ``budget - probe_passes /
k`` steps. ``allocate`` (a prompt set: ``generate --prompts``, the benchmark) finds the scale by
bisection and rounds by largest remainder so the set's mean is met exactly; ``pick`` (one prompt)
scales against a ``reference`` estimate, the one that gets exactly the average: from the
caller, or the median estimate of ``CALIBRATION_PROMPTS`` on the same checkpoint and seed
(a one-time cost, recorded as ``calibration_passes``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.dit.model import condition_frames, velocity_fn
from models.dit.sampling import cfg_velocity, sampling_schedule, shift_t
from training.inference.sampling_setup import Timer, autocast_for, prepare

CALIBRATION_PROMPTS = (
    "a white wall", "a red ball rolls across a wooden table", "waves break on a rocky beach at sunset",
    "two dogs chase each other in a park", "a city street at night with neon signs and traffic",
    "a crowd of dancers spins on a stage under flashing lights", "a candle flame in a dark room",
    "a horse gallops across a snowy field while the camera tracks it",
)


@dataclass
class AdaptiveSteps:
    """Settings of ``steps='auto'``: the average budget (in steps of a fixed schedule, probe
    included), the bounds, the probe times, the exponent and an optional reference estimate."""

    budget: float = 30.0
    min_steps: int = 2
    max_steps: int | None = None  # default 2 * budget
    probe_ts: tuple[float, ...] = (1.0, 0.1)
    power: float = 0.8
    reference: float | None = None

    def __post_init__(self) -> None:
        self.probe_ts = tuple(float(t) for t in self.probe_ts)
        if len(self.probe_ts) < 2 or any(not 0.0 < t <= 1.0 for t in self.probe_ts) \
                or list(self.probe_ts) != sorted(self.probe_ts, reverse=True):
            raise ValueError(f"probe_ts must be >= 2 decreasing times in (0, 1], got {self.probe_ts}")
        if self.max_steps is None:
            self.max_steps = max(self.min_steps, int(round(2 * self.budget)))
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.budget <= 0 or self.power < 0:
            raise ValueError(f"budget must be > 0 and power >= 0, got {self.budget}, {self.power}")

    def probe_passes(self, guided: bool) -> int:
        """DiT passes of one probe (2 per time with plain CFG)."""
        return len(self.probe_ts) * (2 if guided else 1)

    def reuses_first(self, heun: bool) -> bool:
        """Whether the Euler sampler takes the probe's t = 1 velocity as its first step's."""
        return not heun and self.probe_ts[0] == 1.0

    def extra_passes(self, guided: bool, heun: bool = False) -> int:
        """The probe's passes that sampling does not reuse."""
        return self.probe_passes(guided) - ((2 if guided else 1) if self.reuses_first(heun) else 0)

    def mean_steps(self, guided: bool, heun: bool = False) -> float:
        """The average steps left once the probe is paid: ``budget - extra_passes / k``."""
        return self.budget - self.extra_passes(guided, heun) / passes_per_step(guided, heun)

    def pick(self, estimate: float, reference: float, guided: bool, heun: bool = False) -> int:
        """Steps for one prompt: ``mean_steps * (estimate / reference) ** power``, clipped, rounded."""
        ratio = (max(estimate, 0.0) / reference) if reference > 0 else 1.0
        n = self.mean_steps(guided, heun) * ratio ** self.power
        return int(min(self.max_steps, max(self.min_steps, round(n))))  # type: ignore[type-var]

    def allocate(self, estimates: list[float], guided: bool, heun: bool = False) -> list[int]:
        """Steps for a prompt set whose sum is ``floor(len * mean_steps)`` (within the bounds)."""
        total = math.floor(len(estimates) * self.mean_steps(guided, heun) + 1e-9)
        return allocate(estimates, total, self.min_steps, int(self.max_steps or 0), self.power)

    def record(self, found: dict[str, Any], steps: int, guided: bool, heun: bool,
               **extra: Any) -> dict[str, Any]:
        """What generation stores under ``adaptive``: settings, probe, steps and the passes spent."""
        k = passes_per_step(guided, heun)
        return {**self.to_dict(), **found, "steps": steps, "probe_passes": self.probe_passes(guided),
                "reused_first": self.reuses_first(heun), "passes_per_step": k,
                "passes": self.extra_passes(guided, heun) + steps * k, **extra}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def allocate(estimates: list[float], total: int, lo: int, hi: int, power: float = 0.5) -> list[int]:
    """Integers in [lo, hi], ``n_i ~ estimate_i ** power``, summing to ``total`` (clamped to
    [len * lo, len * hi]): a bisection on the scale, then largest-remainder rounding. Ties go to
    the earlier prompt, so the result is deterministic."""
    n = len(estimates)
    if n == 0:
        return []
    total = min(max(total, n * lo), n * hi)
    w = [max(e, 0.0) ** power for e in estimates]
    if not any(w):
        w = [1.0] * n

    def real(scale: float) -> list[float]:
        return [min(hi, max(lo, scale * x)) for x in w]

    a, b = 0.0, hi / min(x for x in w if x > 0) + 1.0
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (mid, b) if sum(real(mid)) < total else (a, mid)
    values = real(b)
    out = [int(math.floor(v)) for v in values]
    order = sorted(range(n), key=lambda i: (-(values[i] - out[i]), i))
    short = total - sum(out)
    for i in order:
        if short <= 0:
            break
        if out[i] < hi:
            out[i] += 1
            short -= 1
    return out


@torch.no_grad()
def probe(model: Any, noise: torch.Tensor, kwargs: dict[str, Any], steps_cfg: AdaptiveSteps,
          shift: float = 1.0, cfg_scale: float = 1.0, uncond_kwargs: dict[str, Any] | None = None
          ) -> tuple[dict[str, Any], torch.Tensor]:
    """The curvature estimate of one prompt's trajectory (see the module docstring).

    Args:
        model: the DiT (or a counted wrapper); called as ``sample`` calls it.
        noise, kwargs, shift, cfg_scale, uncond_kwargs: as ``models.dit.model.sample``.
        steps_cfg: its ``probe_ts`` are the (unshifted) probe times.

    Returns:
        (``{"estimate": float, "changes": [per interval], "ts": [shifted times]}``, the guided
        velocity at the first probe time, which ``sample_euler`` can reuse as its first step's).
    """
    x = condition_frames(noise, kwargs.get("cond"), kwargs.get("cond_mask"))
    if uncond_kwargs is not None and "cond" in kwargs:
        uncond_kwargs = {**uncond_kwargs, "cond": kwargs["cond"], "cond_mask": kwargs.get("cond_mask")}
    fn = velocity_fn(model)
    ts = shift_t(torch.tensor(steps_cfg.probe_ts, dtype=torch.float64), shift).tolist()
    changes, prev, first = [], None, None
    for i, t in enumerate(ts):
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        v = cfg_velocity(fn, x, tt, kwargs, uncond_kwargs, cfg_scale)
        first = v if first is None else first
        if prev is not None:
            changes.append(float((v.float() - prev.float()).norm() / prev.float().norm().clamp_min(1e-12)))
        if i + 1 < len(ts):
            x = x + (ts[i + 1] - t) * v
        prev = v
    record = {"estimate": round(statistics.fmean(changes), 6), "changes": [round(c, 6) for c in changes],
              "ts": [round(t, 6) for t in ts]}
    assert first is not None
    return record, first


@torch.no_grad()
def sample_euler(model: Any, noise: torch.Tensor, kwargs: dict[str, Any], steps: int, shift: float = 1.0,
                 cfg_scale: float = 1.0, uncond_kwargs: dict[str, Any] | None = None,
                 first_velocity: torch.Tensor | None = None) -> torch.Tensor:
    """``models.dit.model.sample`` (Euler), whose first step may take ``first_velocity``, the probe's
    guided velocity at t = 1 on the same noise, instead of computing it again: then the probe's
    first time costs nothing extra. Without it, the same result as ``sample`` step for step."""
    x = condition_frames(noise, kwargs.get("cond"), kwargs.get("cond_mask"))
    if uncond_kwargs is not None and "cond" in kwargs:
        uncond_kwargs = {**uncond_kwargs, "cond": kwargs["cond"], "cond_mask": kwargs.get("cond_mask")}
    fn = velocity_fn(model)
    ts = sampling_schedule(steps, shift).tolist()
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
        if i == 0 and first_velocity is not None:
            v = first_velocity
        else:
            tt = torch.full((x.shape[0],), t_cur, dtype=noise.dtype, device=noise.device)
            v = cfg_velocity(fn, x, tt, kwargs, uncond_kwargs, cfg_scale)
        x = x + (t_next - t_cur) * v
    return x


def passes_per_step(guided: bool, heun: bool) -> int:
    """DiT passes of one sampler step: x2 with plain CFG, x2 with Heun."""
    return (2 if guided else 1) * (2 if heun else 1)


@dataclass
class Plan:
    """The steps chosen for one prompt, their record, and the probe's t = 1 velocity to reuse."""

    steps: int
    record: dict[str, Any]
    first_velocity: torch.Tensor | None


_REFERENCES: dict[tuple[Any, ...], tuple[float, int]] = {}  # calibration per (model, settings)


def is_guided(prepared: tuple[Any, ...]) -> bool:
    """Plain CFG (two passes per velocity) for what ``training.inference.generate.prepare`` returned."""
    return prepared[2] is not None and prepared[3] != 1.0


def probe_prepared(pipeline: Any, prepared: tuple[Any, ...], picker: AdaptiveSteps,
                   timer: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """``probe`` on what ``training.inference.generate.prepare`` returned, under the run's autocast, its DiT
    passes counted in ``timer`` (``dit_passes``, ``dit_s``)."""
    noise, kwargs, uncond, cfg_scale, shift = prepared
    with autocast_for(pipeline.config, noise.device), timer.section("dit_s"):
        model = timer.counted(pipeline.dit, "dit_passes")
        return probe(model, noise, kwargs, picker, shift, cfg_scale, uncond)


def calibration_reference(pipeline: Any, picker: AdaptiveSteps,
                          settings: tuple[Any, ...]) -> tuple[float, int]:
    """(median probe estimate of ``CALIBRATION_PROMPTS``, DiT passes it took) for ``pipeline`` at
    ``settings`` = (image, n_frames, size, cfg_scale, negative_prompt, seed); cached per process."""
    image, n_frames, size, cfg_scale, negative, seed = settings
    key = (id(pipeline.dit), str(image), n_frames, tuple(size), cfg_scale, negative, seed, picker.probe_ts)
    if key not in _REFERENCES:
        timer = Timer()
        estimates = [probe_prepared(pipeline, prepare(pipeline, p, image, n_frames, size, cfg_scale, negative,
                                                      seed, timer), picker, timer)[0]["estimate"]
                     for p in CALIBRATION_PROMPTS]
        _REFERENCES[key] = (float(statistics.median(estimates)), int(timer.out["dit_passes"]))
    return _REFERENCES[key]


def auto_steps(pipeline: Any, prepared: tuple[Any, ...], picker: AdaptiveSteps | None, heun: bool, timer: Any,
               settings: tuple[Any, ...]) -> Plan:
    """``steps='auto'`` for one prompt: probe, then ``pick`` against the reference (the picker's,
    else ``calibration_reference``)."""
    picker = picker or AdaptiveSteps()
    guided = is_guided(prepared)
    found, first = probe_prepared(pipeline, prepared, picker, timer)
    reference, calibration, calibration_passes = picker.reference, "given", 0
    if reference is None:
        reference, calibration_passes = calibration_reference(pipeline, picker, settings)
        calibration = "builtin"
    steps = picker.pick(found["estimate"], reference, guided, heun)
    record = picker.record(found, steps, guided, heun, reference=round(reference, 6), calibration=calibration,
                           calibration_passes=calibration_passes)
    return Plan(steps, record, first if picker.reuses_first(heun) else None)
