"""tripletnet: train embedding networks with the triplet loss and evaluate them like verification systems."""

__version__ = "0.1.0"
