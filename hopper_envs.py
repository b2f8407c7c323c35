"""Source, target and randomized MuJoCo Hopper for the sim-to-real study.

Importing this module registers these gymnasium ids, all built on gymnasium's Hopper (the v5
class: 11-d observation, 3-d action in [-1, 1], episodes truncated at 1000 steps):

- ``CustomHopper-target-v0``: gymnasium's Hopper unchanged, our stand-in for the real robot.
- ``CustomHopper-source-v0``: the simulator we train in; its torso is 1 kg lighter.
- ``CustomHopper-udr-v0``: the source Hopper whose thigh, leg and foot masses are drawn uniformly
  at every reset (Uniform Domain Randomization; Tobin et al. 2017, arXiv:1703.06907) from
  ``mass_bounds`` (default: source mass x (1 -+ 0.1) each, ``DEFAULT_MASS_SCALE``).
- ``CustomHopper-udr<p>-v0`` for p in 5, 10, 20, 30, 50: the same with bounds source mass x (1 -+ p/100),
  so that any script's ``--env-id hopper_envs:CustomHopper-udr30-v0`` trains with +-30%.

Nominal masses are read from the loaded MuJoCo model, never typed in: under mujoco >= 3 they are
torso 3.665, thigh 4.058, leg 2.781, foot 5.316 kg (old mujoco-py reported 3.53 / 3.93 / 2.71 /
5.09 for the same XML). When a mass changes, the body's inertia is scaled by the same factor (a
link of the same shape, made denser) and ``mj_setConst`` refreshes the model's derived constants.

    import gymnasium as gym, hopper_envs
    env = gym.make("CustomHopper-udr-v0", mass_bounds={"thigh": (3.5, 4.5), "leg": (2.3, 3.3), "foot": (4.8, 5.8)})
    hopper_envs.get_masses(env)                     # {'torso': 2.665, 'thigh': ..., ...}
    hopper_envs.set_mass_bounds(vector_env, bounds)  # between two trainings (BayRn)
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

BODIES = ("torso", "thigh", "leg", "foot")
RANDOMIZED_BODIES = ("thigh", "leg", "foot")
TORSO_SHIFT_KG = -1.0  # source torso = target torso + this
# +-10% of each source mass, about the seed study's +-0.5 kg. Chosen after benchmark/transfer.py's sweep of
# udr_hopper.py on seed 1 (scale 0.1 / 0.3 / 0.5: target returns 1932 / 922 / 829), so with target data; the
# first, a-priori default 0.3 transferred worse than no randomization on all 3 seeds
# (benchmark/results/transfer/transfer-hopper-scale0.3.md).
DEFAULT_MASS_SCALE = 0.1
UDR_ID_PERCENTS = (5, 10, 20, 30, 50)  # the CustomHopper-udr<p>-v0 ids
DOMAINS = ("source", "target", "udr")


def validate_mass_bounds(bounds: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Check UDR bounds and return them as ``{body: (low, high)}`` in kg, floats.

    bounds must name exactly the bodies in ``RANDOMIZED_BODIES`` (thigh, leg, foot), each with
    two numbers 0 < low <= high. Raises ValueError naming the body and the values otherwise.
    """
    if not isinstance(bounds, Mapping):
        raise TypeError(f"mass bounds must map body -> (low, high), got {bounds!r}")
    unknown = sorted(set(bounds) - set(RANDOMIZED_BODIES))
    missing = [b for b in RANDOMIZED_BODIES if b not in bounds]
    if unknown or missing:
        raise ValueError(
            f"mass bounds must name exactly {list(RANDOMIZED_BODIES)}: unknown {unknown}, missing {missing}"
        )
    checked = {}
    for body in RANDOMIZED_BODIES:
        pair = tuple(float(x) for x in np.ravel(bounds[body]))
        if len(pair) != 2:
            raise ValueError(f"mass bounds for {body} need 2 numbers (low, high), got {len(pair)}: {pair}")
        low, high = pair
        if not (np.isfinite(low) and np.isfinite(high)) or low <= 0:
            raise ValueError(f"mass bounds for {body} must be finite and positive, got low={low}, high={high}")
        if low > high:
            raise ValueError(f"mass bounds for {body} have low > high: low={low}, high={high}")
        checked[body] = (low, high)
    return checked


class CustomHopper(HopperEnv):
    """gymnasium's Hopper with a ``domain``: "target" (unchanged), "source" (torso 1 kg lighter)
    or "udr" (source, with thigh / leg / foot masses drawn at every reset from ``mass_bounds``, in kg,
    or else from ``scaled_mass_bounds(mass_scale)``; neither given: ``DEFAULT_MASS_SCALE``).

    Extra keyword arguments go to gymnasium's ``HopperEnv`` (e.g. ``render_mode``).
    Raises ValueError for an unknown domain or bad bounds (see ``validate_mass_bounds``).
    """

    def __init__(self, domain: str = "target", mass_bounds: Mapping | None = None,
                 mass_scale: float | None = None, **kwargs):
        if domain not in DOMAINS:
            raise ValueError(f"unknown Hopper domain {domain!r}, expected one of {DOMAINS}")
        super().__init__(**kwargs)
        self.domain = domain
        self._body_ids = {b: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, b) for b in BODIES}
        # The target's masses as the XML defines them; everything else is relative to these.
        self.target_masses = self.masses()
        self.source_masses = dict(self.target_masses, torso=self.target_masses["torso"] + TORSO_SHIFT_KG)
        if domain != "target":
            self.set_masses({"torso": self.source_masses["torso"]})
        self.mass_bounds = None
        if domain == "udr":
            if mass_bounds is not None and mass_scale is not None:
                raise ValueError("give mass_bounds or mass_scale, not both")
            if mass_bounds is None:
                mass_bounds = scaled_mass_bounds(DEFAULT_MASS_SCALE if mass_scale is None else mass_scale,
                                                 self.source_masses)
            self.set_mass_bounds(mass_bounds)
        elif mass_bounds is not None or mass_scale is not None:
            raise ValueError(f"mass_bounds and mass_scale only apply to the 'udr' domain, not {domain!r}")

    def masses(self) -> dict[str, float]:
        """Current masses in kg, ``{body: mass}`` for torso, thigh, leg, foot."""
        return {b: float(self.model.body_mass[i]) for b, i in self._body_ids.items()}

    def set_masses(self, masses: Mapping[str, float]) -> None:
        """Set some or all of the four masses (kg). Inertia scales with the mass (same shape).

        Raises ValueError for an unknown body or a non-positive / non-finite mass.
        """
        for body, mass in masses.items():
            if body not in self._body_ids:
                raise ValueError(f"unknown Hopper body {body!r}, expected one of {BODIES}")
            if not np.isfinite(mass) or mass <= 0:
                raise ValueError(f"mass of {body} must be finite and positive, got {mass}")
        for body, mass in masses.items():
            i = self._body_ids[body]
            self.model.body_inertia[i] *= mass / self.model.body_mass[i]
            self.model.body_mass[i] = mass
        mujoco.mj_setConst(self.model, self.data)

    def set_mass_bounds(self, bounds: Mapping[str, tuple[float, float]]) -> None:
        """Replace the UDR bounds ``{body: (low, high)}`` (kg); used from the next reset on.

        Raises ValueError if this env is not the "udr" domain or the bounds are bad.
        """
        if self.domain != "udr":
            raise ValueError(f"only the 'udr' domain randomizes masses, this env is {self.domain!r}")
        self.mass_bounds = validate_mass_bounds(bounds)

    def reset_model(self):
        if self.domain == "udr":
            # The env's own seeded generator: reset(seed=s) fixes the whole mass sequence.
            self.set_masses({b: self.np_random.uniform(lo, hi) for b, (lo, hi) in self.mass_bounds.items()})
        return super().reset_model()


def nominal_masses(domain: str = "target") -> dict[str, float]:
    """The fixed masses in kg of the "source" or "target" Hopper, ``{torso, thigh, leg, foot: float}``,
    read from a freshly loaded model. Raises ValueError for another domain."""
    if domain not in ("source", "target"):
        raise ValueError(f"nominal masses exist for 'source' and 'target', not {domain!r}")
    hopper = CustomHopper(domain="target")
    masses = hopper.source_masses if domain == "source" else hopper.target_masses
    hopper.close()
    return dict(masses)


def scaled_mass_bounds(scale: float, source: Mapping[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """UDR bounds ``{body: ((1 - scale) m, (1 + scale) m)}`` in kg around each randomized body's source mass m
    (``source``: the source masses if already read, else ``nominal_masses("source")``).
    Raises ValueError unless 0 <= scale < 1."""
    if not 0 <= scale < 1:
        raise ValueError(f"mass scale must be in [0, 1), got {scale}")
    source = source or nominal_masses("source")
    return {b: ((1 - scale) * source[b], (1 + scale) * source[b]) for b in RANDOMIZED_BODIES}


def _hopper(env: gym.Env | gym.vector.VectorEnv) -> CustomHopper:
    base = env.unwrapped
    if not isinstance(base, CustomHopper):
        raise TypeError(f"expected a CustomHopper-* env, got {type(base).__name__}")
    return base


def get_masses(env: gym.Env) -> dict[str, float]:
    """Masses in kg of a (wrapped) CustomHopper env: ``{torso, thigh, leg, foot: float}``.

    Raises TypeError if env is not a CustomHopper-* env.
    """
    return _hopper(env).masses()


def set_masses(env: gym.Env, masses: Mapping[str, float]) -> None:
    """Set masses (kg) of a (wrapped) CustomHopper env. Raises ValueError on bad input."""
    _hopper(env).set_masses(masses)


def set_mass_bounds(env: gym.Env | gym.vector.VectorEnv, bounds: Mapping[str, tuple[float, float]]) -> None:
    """Change the UDR bounds of a live env or of every sub-env of a vector env (next reset on).

    bounds: ``{"thigh": (low, high), "leg": ..., "foot": ...}`` in kg.
    Raises ValueError if an env is not "udr" or the bounds are bad (nothing is changed then).
    """
    checked = validate_mass_bounds(bounds)
    if isinstance(env, gym.vector.VectorEnv):
        env.unwrapped.call("set_mass_bounds", checked)  # VectorWrappers do not forward call()
    else:
        _hopper(env).set_mass_bounds(checked)


_IDS = {f"CustomHopper-{d}-v0": {"domain": d} for d in DOMAINS}
_IDS.update({f"CustomHopper-udr{p}-v0": {"domain": "udr", "mass_scale": p / 100} for p in UDR_ID_PERCENTS})
for _id, _kwargs in _IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=CustomHopper, kwargs=_kwargs, max_episode_steps=1000)
