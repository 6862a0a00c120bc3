"""The von Mises-Fisher normaliser on the unit sphere S^(d-1), computed numerically with scipy for any d >= 2.

    vMF(o; mu, kappa) = C_d(kappa) exp(kappa mu^T o),  C_d(kappa) = kappa^nu / ((2 pi)^(d/2) I_nu(kappa)),  nu = d/2 - 1
    d/dkappa log C_d(kappa) = -A_d(kappa),  A_d(kappa) = I_(nu+1)(kappa) / I_nu(kappa)  (the mean resultant length)

log I_nu(kappa) = log ive(nu, kappa) + kappa (scipy's exponentially scaled Bessel function, so a large kappa never
overflows); below SMALL_KAPPA the power series, in which kappa^nu / I_nu(kappa) cancels exactly; where ive under- or
overflows (nu large against kappa) the uniform asymptotic (Debye) expansion. In 3 dimensions
C_3(kappa) = kappa / (4 pi sinh kappa), which the tests compare against. The original code of the method read
concentrations from lookup tables that it never shipped; nothing here needs a table.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import gammaln, ive

SMALL_KAPPA = 1e-3  # below: power series (relative error ~ kappa^6)
IVE_FLOOR = 1e-280  # ive values below this are too close to underflow to trust: Debye expansion instead


def _check(kappa, dim: int) -> np.ndarray:
    if int(dim) != dim or dim < 2:
        raise ValueError(f"vMF dimension must be an integer >= 2, got {dim!r}")
    kappa = np.asarray(kappa, dtype=np.float64)
    if np.any(kappa < 0) or not np.all(np.isfinite(kappa)):
        raise ValueError("vMF concentration kappa must be finite and >= 0")
    return kappa


def _log_iv_debye(nu: float, x: np.ndarray) -> np.ndarray:
    """log I_nu(x) by the uniform asymptotic expansion in nu (DLMF 10.41.3), terms up to u_3; nu > 0, x > 0."""
    z = x / nu
    s = np.sqrt(1.0 + z * z)
    t = 1.0 / s
    eta = s + np.log(z / (1.0 + s))
    u1 = t * (3.0 - 5.0 * t**2) / 24.0
    u2 = t**2 * (81.0 - 462.0 * t**2 + 385.0 * t**4) / 1152.0
    u3 = t**3 * (30375.0 - 369603.0 * t**2 + 765765.0 * t**4 - 425425.0 * t**6) / 414720.0
    series = 1.0 + u1 / nu + u2 / nu**2 + u3 / nu**3
    return nu * eta - 0.5 * np.log(2.0 * np.pi * nu) - 0.5 * np.log(s) + np.log(series)


def log_bessel_iv(nu: float, x) -> np.ndarray:
    """log I_nu(x) for x > 0: scaled Bessel function where it is representable, Debye expansion elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        scaled = ive(nu, x)
        good = np.isfinite(scaled) & (scaled > IVE_FLOOR)
        out = np.log(np.where(good, scaled, 1.0)) + x
    if not np.all(good):
        if nu <= 0:
            raise ValueError(f"log I_{nu}(x) not representable for x = {x[~good][:3]}")
        out = np.where(good, out, _log_iv_debye(nu, np.where(good, 1.0, x)))
    return out


def log_normaliser(kappa, dim: int) -> np.ndarray:
    """log C_d(kappa), elementwise, float64."""
    kappa = _check(kappa, dim)
    nu = dim / 2.0 - 1.0
    small = kappa < SMALL_KAPPA
    q = kappa * kappa / 4.0
    # series: I_nu(k) = (k/2)^nu / Gamma(nu+1) * (1 + q/(nu+1) + q^2/(2 (nu+1)(nu+2)) + ...), q = k^2/4
    series = (nu * np.log(2.0) + gammaln(nu + 1.0) - dim / 2.0 * np.log(2.0 * np.pi)
              - np.log1p(q / (nu + 1.0) + q * q / (2.0 * (nu + 1.0) * (nu + 2.0))))
    safe = np.where(small, 1.0, kappa)
    direct = nu * np.log(safe) - dim / 2.0 * np.log(2.0 * np.pi) - log_bessel_iv(nu, safe)
    return np.where(small, series, direct)


def mean_resultant_length(kappa, dim: int) -> np.ndarray:
    """A_d(kappa) = I_(d/2)(kappa) / I_(d/2-1)(kappa) = -d/dkappa log C_d(kappa), in [0, 1)."""
    kappa = _check(kappa, dim)
    nu = dim / 2.0 - 1.0
    small = kappa < SMALL_KAPPA
    q = kappa * kappa / 4.0
    series = kappa / (2.0 * (nu + 1.0)) * (1.0 + q / (nu + 2.0)) / (1.0 + q / (nu + 1.0))
    safe = np.where(small, 1.0, kappa)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        num, den = ive(nu + 1.0, safe), ive(nu, safe)
        good = np.isfinite(num) & np.isfinite(den) & (num > IVE_FLOOR) & (den > IVE_FLOOR)
        ratio = np.where(good, num / np.where(good, den, 1.0), 0.0)
    if not np.all(good | small):
        logs = log_bessel_iv(nu + 1.0, safe) - log_bessel_iv(nu, safe)
        ratio = np.where(good, ratio, np.exp(logs))
    return np.where(small, series, ratio)


class _LogNormaliser(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.dim = dim
        ctx.save_for_backward(kappa)
        value = log_normaliser(kappa.detach().cpu().double().numpy(), dim)
        return torch.from_numpy(value).to(kappa)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kappa,) = ctx.saved_tensors
        slope = mean_resultant_length(kappa.detach().cpu().double().numpy(), ctx.dim)
        return -grad * torch.from_numpy(slope).to(kappa), None


def log_normaliser_t(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """log C_d(kappa) of a tensor, differentiable (d/dkappa = -A_d(kappa)); computed in float64 with scipy."""
    return _LogNormaliser.apply(kappa, dim)
