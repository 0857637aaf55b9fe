from chaostoolkit import encoder  # noqa
from chaostoolkit.commands import cli


__all__ = ["cli"]
