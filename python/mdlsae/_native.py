"""Loads the private native modules: ``_C`` (CPU, always built) and ``_C_cuda`` (only where the
package was built with a CUDA compiler). Everything else imports them from here."""

from __future__ import annotations

from . import _C

try:  # the CUDA module is optional: absent when no CUDA compiler was found at build time
    from . import _C_cuda
except ImportError:  # pragma: no cover - depends on the build
    _C_cuda = None

__all__ = ["_C", "_C_cuda"]
