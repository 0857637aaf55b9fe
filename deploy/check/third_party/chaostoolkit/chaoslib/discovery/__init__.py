from chaoslib.discovery.discover import (
    discover,
    discover_actions,
    discover_probes,
    initialize_discovery_result,
)

__all__ = [
    "discover",
    "discover_actions",
    "discover_probes",
    "initialize_discovery_result",
]
