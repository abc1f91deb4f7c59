"""The loss law L(N, D) = E + A / N^alpha + B / D^beta: named fits, typed-in fits, stored fits.

N parameters, D training tokens, L in nats per token. Constants (../shared/reference/scaling.md):
  - `chinchilla`: Hoffmann et al. 2022 (arXiv 2203.15556) eq. 10, approach 3. The paper prints
    alpha 0.34 and beta 0.28 (rounded); we use 0.336 / 0.283, the constants of the released code
    of Sardana & Frankle 2024 (arXiv 2401.00448), with which their published checks reproduce.
  - `epoch`: Besiroglu et al. 2024 (arXiv 2404.10102), a replication of approach 3.
A user's own fit is either typed in (`E=1.69,A=406.4,B=410.7,alpha=0.336,beta=0.283`) or a name
in the store's `fits` table (written by `fit`, issue 10). Losses from different data or
tokenizers are not comparable, so every reference model is evaluated under the fit in use.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from planners.errors import BadInput

CONSTANTS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class LossLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "custom"
    source: str = ""

    def __post_init__(self):
        for key in CONSTANTS:
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadInput(f"fit {self.name!r}: {key} must be a finite number, got {value!r}")
        if self.E < 0 or self.A <= 0 or self.B <= 0 or self.alpha <= 0 or self.beta <= 0:
            raise BadInput(f"fit {self.name!r}: need E >= 0 and A, B, alpha, beta > 0, got "
                           f"{self.constants()}")

    def loss(self, n_params: float, tokens: float) -> float:
        """Predicted loss (nats/token) of N parameters trained on D tokens."""
        return self.E + self.A / n_params ** self.alpha + self.B / tokens ** self.beta

    def constants(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in CONSTANTS}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHINCHILLA = LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.336, beta=0.283, name="chinchilla",
                     source="Hoffmann et al. 2022 eq. 10 (approach 3); alpha 0.336, beta 0.283 "
                            "as in Sardana & Frankle's released code (paper: 0.34, 0.28)")
EPOCH = LossLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658, name="epoch",
                source="Besiroglu et al. 2024 (arXiv 2404.10102), replication of approach 3")
FITS: dict[str, LossLaw] = {f.name: f for f in (CHINCHILLA, EPOCH)}

_KEYS = {"e": "E", "a": "A", "b": "B", "alpha": "alpha", "beta": "beta"}
_PAIR = re.compile(r"^\s*([A-Za-z]+)\s*=\s*([-+0-9.eE]+)\s*$")


def parse_constants(text: str) -> LossLaw:
    """'E=1.69,A=406.4,B=410.7,alpha=0.336,beta=0.283' -> LossLaw (all five, any order)."""
    values: dict[str, float] = {}
    for part in text.split(","):
        m = _PAIR.match(part)
        key = _KEYS.get(m.group(1).lower()) if m else None
        if m is None or key not in CONSTANTS or key in values:
            raise BadInput(f"cannot read fit constants {text!r}; give all five once, e.g. "
                           "E=1.69,A=406.4,B=410.7,alpha=0.336,beta=0.283")
        try:
            values[key] = float(m.group(2))
        except ValueError:
            raise BadInput(f"fit constant {part.strip()!r} is not a number") from None
    missing = [k for k in CONSTANTS if k not in values]
    if missing:
        raise BadInput(f"fit constants {text!r} lack {', '.join(missing)}; give all of "
                       "E, A, B, alpha, beta")
    return LossLaw(**values, name="custom", source="typed in")


def law_from_constants(name: str, constants: Mapping[str, Any], source: str = "") -> LossLaw:
    """A stored fit's constants dict ({E, A, B, alpha, beta}) -> LossLaw."""
    try:
        return LossLaw(**{k: float(constants[k]) for k in CONSTANTS}, name=name, source=source)
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"stored fit {name!r} does not hold numbers for all of "
                       f"{', '.join(CONSTANTS)}: {dict(constants)!r}") from None


def _stored_fits(store) -> dict[str, tuple[dict, str]]:  # noqa: ANN001 (duck-typed store)
    """name -> (constants, source) from a store's `fits` table. tally's Store is read through its
    session, with the ORM class imported here, lazily, so planners/ never imports orchestrator
    at load time; any other object may offer `fits() -> {name: constants}`."""
    if not hasattr(store, "read") and hasattr(store, "fits"):
        return {n: (dict(c), "stored fit") for n, c in store.fits().items()}
    from sqlalchemy import select

    from orchestrator.store import Fit

    with store.read() as s:
        return {f.name: (dict(f.constants), f"stored fit ({f.created_at:%Y-%m-%d})")
                for f in s.scalars(select(Fit))}


def stored_fit_details(store, name: str) -> dict | None:  # noqa: ANN001 (duck-typed store)
    """A stored fit's details (bootstrap draws, intervals; see orchestrator/fits.save_fit), or
    None when no fit of that name is stored. Read like `_stored_fits`: lazily, through the
    store's session, or from any object offering `fit_details(name)`."""
    if not hasattr(store, "read"):
        return store.fit_details(name) if hasattr(store, "fit_details") else None
    from orchestrator.store import Fit

    with store.read() as s:
        row = s.get(Fit, name)
        return None if row is None else dict(row.details or {})


def resolve_fit(spec: str | None, store=None, *,  # noqa: ANN001 (duck-typed store)
                fits: Mapping[str, Mapping[str, Any]] | None = None) -> LossLaw:
    """`chinchilla` (default) / `epoch` / `E=..,A=..,B=..,alpha=..,beta=..` / a stored fit name.

    Stored fits come from `fits` (name -> constants dict, already loaded) or from `store`."""
    spec = (spec or "chinchilla").strip()
    if spec.lower() in FITS:
        return FITS[spec.lower()]
    if "=" in spec:
        return parse_constants(spec)
    known: dict[str, tuple[dict, str]] = {}
    if fits is not None:
        known.update({n: (dict(c), "given") for n, c in fits.items()})
    if store is not None:
        known.update(_stored_fits(store))
    if spec in known:
        constants, source = known[spec]
        return law_from_constants(spec, constants, source)
    names = list(FITS) + sorted(known)
    raise BadInput(f"unknown fit {spec!r}; use one of {', '.join(names)} or constants "
                   "E=1.69,A=406.4,B=410.7,alpha=0.336,beta=0.283")
