"""tripletnet: train embedding networks with the triplet loss and evaluate them like verification systems."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that importing tripletnet (e.g. for the CLI's --help) does not import torch.
    if name == "load_model":
        from .inference.model import load_model

        return load_model
    raise AttributeError(f"module 'tripletnet' has no attribute {name!r}")


__all__ = ["load_model"]
