"""The base of the fake platforms: the SDK's one local server (see
:class:`omnichannel.integrations.server.LocalServer`), whose :meth:`handle` a fake overrides."""

from __future__ import annotations

from omnichannel.integrations.server import LocalServer

__all__ = ["LocalServer"]
