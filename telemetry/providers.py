"""What the app builds from OpenTelemetry's global providers (its tracer, its instruments), built
once per provider: the global provider is set after import when Azure Monitor is configured, and
tests swap it, so a cached tracer or instrument from an earlier provider would record nowhere."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Tuple


class PerProvider:
    def __init__(self, build: Callable[[Any], Any]):
        self._build = build
        self._lock = threading.Lock()
        self._built: Optional[Tuple[Any, Any]] = None

    def get(self, provider: Any) -> Any:
        built = self._built
        if built is None or built[0] is not provider:
            with self._lock:
                built = self._built
                if built is None or built[0] is not provider:
                    built = (provider, self._build(provider))
                    self._built = built
        return built[1]
