"""The hash model: network, streaming encoder, code packing and the loader the daemon uses."""

from streamd.model.api import Fingerprinter, load_fingerprinter

__all__ = ["Fingerprinter", "load_fingerprinter"]
